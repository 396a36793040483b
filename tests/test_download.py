"""`wit download` on the sample web (every fault class), shard layout, resume, --retry-failed, formats."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tarfile
import threading
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.config import load_config
from pipeline.download import inspect_image, plan_shards, read_shard_rows, run_download
from pipeline.errors import UserError
from pipeline.ids import make_uid
from schemas import SHARD_METADATA, validate
from tests.conftest import free_port

# --- helpers ---------------------------------------------------------------------------------------


def shard_metadata(out: Path) -> list[dict]:
    rows = []
    for f in sorted(out.glob("[0-9]*.parquet")):
        t = pq.read_table(f)
        if "jpg" not in t.column_names:
            validate(t, SHARD_METADATA)
        rows += t.to_pylist()
    return rows


def tar_samples(out: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for f in sorted(out.glob("*.tar")):
        with tarfile.open(f) as tf:
            for m in tf.getmembers():
                key, _, ext = m.name.partition(".")
                samples.setdefault(key, {})
                assert ext not in samples[key], f"duplicate {m.name}"
                samples[key][ext] = tf.extractfile(m).read()
    return samples


def outcome(rows: list[dict]) -> dict[str, tuple]:
    return {r["uid"]: (r["status"], r["error_message"], r["sha256"]) for r in rows}


def cfg_for(tmp, allow, **dl):
    over = {"output_dir": str(tmp), "download.allow_hosts": list(allow), "download.threads": 8,
            "download.shard_size": 40, "download.timeout_s": 5.0, "download.retries": 1}
    over.update({f"download.{k}": v for k, v in dl.items()})
    return load_config(overrides=over)


def write_input(path: Path, rows: list[dict], row_group_size: int | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path / "part-00000.parquet", row_group_size=row_group_size)
    return path


class _Secret(BaseHTTPRequestHandler):
    """A second local server (the redirect_other_port target): it must never be reached."""

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.server.hits += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    from pipeline.sample_web import SampleWebServer, generate_sample_web

    port = free_port()
    root = tmp_path_factory.mktemp("sample_web")
    generate_sample_web(str(root), n_pairs=200, seed=0, base_url=f"http://127.0.0.1:{port}")
    gt = pq.read_table(root / "ground_truth.parquet").to_pylist()
    rows = [{"uid": make_uid(r["url"], str(i)), "url": r["url"], "text": r["true_caption"] or "x",
             "text_source": "alt", "page_url": r["page_url"], "source_file": "crawl.warc.gz",
             "entry_ids": [i % 7, 100 + i], "keep_prob": 0.5, "lang": r["lang"],
             "expected": r["expected_status"], "fault": r["fault"]} for i, r in enumerate(gt)]
    secret = None
    try:
        secret = ThreadingHTTPServer(("127.0.0.1", port + 1), _Secret)
        secret.hits, secret.body = 0, (root / "site" / gt[0]["image_path"]).read_bytes()
        threading.Thread(target=secret.serve_forever, daemon=True).start()
    except OSError:
        secret = None
    with SampleWebServer(root / "site", port=port) as srv:
        yield {"root": root, "srv": srv, "rows": rows, "allow": [f"127.0.0.1:{port}"], "secret": secret}
    if secret is not None:
        secret.shutdown()
        secret.server_close()


@pytest.fixture(scope="module")
def full_run(web, spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dl_full")
    src = write_input(tmp / "in", web["rows"], row_group_size=30)
    cfg = cfg_for(tmp, web["allow"])
    stats = run_download(cfg, spark, input=str(src))
    return {"cfg": cfg, "src": src, "out": tmp / "shards", "stats": stats}


# --- image checks ----------------------------------------------------------------------------------


def _png_header(w: int, h: int) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def _img(fmt: str, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 10)).save(buf, fmt)
    return buf.getvalue()


def test_inspect_image_reads_only_headers():
    assert inspect_image(_img("JPEG"), 10_000) == (40, 30, None)
    assert inspect_image(_img("PNG"), 10_000) == (40, 30, None)
    assert inspect_image(_img("WEBP"), 10_000) == (40, 30, None)
    assert inspect_image(_png_header(20_000, 20_000), 89_478_485)[2] == "decompression_bomb"
    assert inspect_image(_png_header(2_000, 2_000), 1_000_000)[2] == "decompression_bomb"
    assert inspect_image(b"<!DOCTYPE html><html>hi</html>", 10_000)[2] == "not_image"
    assert inspect_image(b'<svg xmlns="http://www.w3.org/2000/svg"/>', 10_000)[2] == "not_image"
    assert inspect_image(b"", 10_000)[2] == "not_image"
    jpg = _img("JPEG", (200, 200))
    assert inspect_image(jpg[: len(jpg) // 2], 10**6)[2] == "decode_error"
    webp = _img("WEBP", (200, 200))
    assert inspect_image(webp[: len(webp) // 2], 10**6)[2] == "decode_error"


# --- planning: row ranges, in input order ------------------------------------------------------------


def test_plan_shards_by_row_range_across_files(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for k, n in enumerate([7, 0, 12]):
        rows = [{"url": f"http://e.com/{k}/{i}.jpg", "text": f"t{k}-{i}", "entry_ids": pa.scalar([i], pa.list_(pa.int64())).as_py()}
                for i in range(n)]
        schema = pa.schema([("url", pa.string()), ("text", pa.string()), ("entry_ids", pa.list_(pa.int64()))])
        pq.write_table(pa.Table.from_pylist(rows, schema), d / f"part-{k}.parquet", row_group_size=3)
    (d / "_SUCCESS").write_text("")
    (d / ".part-0.parquet.crc").write_text("")
    files, specs = plan_shards(str(d), 5)
    assert [n for _, n in files] == [7, 0, 12]
    assert [s.n_rows for s in specs] == [5, 5, 5, 4]
    rows = [r for s in specs for r in read_shard_rows(s)]
    assert [r["text"] for r in rows] == [f"t0-{i}" for i in range(7)] + [f"t2-{i}" for i in range(12)]
    r = rows[0]
    assert r["uid"] == make_uid(r["url"], r["text"]) and r["text_source"] == "caption"
    assert r["entry_ids"] == [0] and r["lang"] is None and r["keep_prob"] is None


def test_input_without_url_is_a_user_error(tmp_path, spark):
    src = write_input(tmp_path / "in", [{"link": "http://e.com/a.jpg", "text": "a"}])
    with pytest.raises(UserError, match="no url column"):
        run_download(load_config(overrides={"output_dir": str(tmp_path)}), spark, input=str(src))


# --- the sample web end to end ---------------------------------------------------------------------


def test_every_fault_ends_with_its_reason(web, full_run):
    rows = shard_metadata(full_run["out"])
    assert len(rows) == len(web["rows"]) and len({r["uid"] for r in rows}) == len(rows)
    expected = {r["uid"]: r for r in web["rows"]}
    got = {r["uid"]: (r["status"] if r["status"] == "success" else r["error_message"]) for r in rows}
    wrong = {expected[u]["fault"]: (expected[u]["expected"], g) for u, g in got.items() if g != expected[u]["expected"]}
    assert not wrong
    faults_seen = {expected[u]["fault"] for u in got} - {None}
    from pipeline.sample_web import FAULTS

    assert faults_seen == set(FAULTS)
    for r in rows:  # carried columns survive
        e = expected[r["uid"]]
        assert (r["url"], r["text"], r["entry_ids"], r["keep_prob"], r["page_url"]) == (
            e["url"], e["text"], e["entry_ids"], 0.5, e["page_url"])


def test_stats_per_shard_and_total(web, full_run):
    out, stats = full_run["out"], full_run["stats"]
    assert (out / "_SUCCESS").exists() and (out / "_stats.json").exists()
    assert not (out / "_tmp").exists()
    assert stats["input_rows"] == len(web["rows"])
    want = Counter(r["expected"] for r in web["rows"])
    assert stats["output_rows"] == want.pop("success")
    assert stats["drops"] == dict(want)
    assert stats["extra"]["success_rate"] == round(stats["output_rows"] / stats["input_rows"], 4)
    assert stats["extra"]["bytes_written"] > 0 and stats["extra"]["images_per_s"] > 0
    per_shard = [json.loads(p.read_text()) for p in sorted(out.glob("[0-9]*_stats.json"))]
    assert len(per_shard) == stats["extra"]["shards"] == -(-len(web["rows"]) // 40)
    assert sum(s["count"] for s in per_shard) == len(web["rows"])
    assert sum(s["successes"] for s in per_shard) == stats["output_rows"]


def test_shards_open_with_webdataset_and_agree_with_metadata(full_run):
    import webdataset as wds

    out = full_run["out"]
    meta = {r["key"]: r for r in shard_metadata(out)}
    seen = set()
    for sample in wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")), shardshuffle=False):
        key = sample["__key__"]
        assert key not in seen
        seen.add(key)
        m = meta[key]
        assert m["status"] == "success"
        assert hashlib.sha256(sample["jpg"]).hexdigest() == m["sha256"] and len(sample["jpg"]) == m["bytes"]
        assert sample["txt"].decode() == m["text"]
        js = json.loads(sample["json"])
        assert js["uid"] == m["uid"] and js["key"] == key and js["entry_ids"] == m["entry_ids"]
        with Image.open(io.BytesIO(sample["jpg"])) as im:
            assert im.size == (256, 256) == (m["width"], m["height"])  # border mode pads to a square
    assert seen == {k for k, m in meta.items() if m["status"] == "success"}
    keys = sorted(meta)
    assert all(len(k) == 7 for k in keys) and keys[0] == "0000000"  # img2dataset keys: shard * 100 + index


def test_no_private_or_file_content_is_written(web, full_run):
    rows = shard_metadata(full_run["out"])
    bad = {r["uid"] for r in web["rows"] if r["fault"] in ("redirect_other_port", "redirect_private", "redirect_file")}
    assert bad and all(r["status"] == "failed" for r in rows if r["uid"] in bad)
    blobs = [b for s in tar_samples(full_run["out"]).values() for b in s.values()]
    assert not any(b"root:" in b for b in blobs)
    if web["secret"] is not None:
        assert web["secret"].hits == 0
        secret_sha = hashlib.sha256(web["secret"].body).hexdigest()
        assert all(r["sha256"] != secret_sha for r in rows)


def test_rerun_skips_complete_shards_and_redoes_the_rest(web, full_run, spark):
    out, cfg = full_run["out"], full_run["cfg"]
    before = outcome(shard_metadata(out))
    again = run_download(cfg, spark, input=str(full_run["src"]))  # complete: nothing to do
    assert again["output_rows"] == full_run["stats"]["output_rows"]
    # as if killed: one shard lost its completion marker, another left a temporary behind
    os.remove(out / "_SUCCESS")
    os.remove(out / "00002.parquet")
    (out / "_tmp" / "00003-deadbeef").mkdir(parents=True)
    (out / "_tmp" / "00003-deadbeef" / "00003.tar").write_bytes(b"partial")
    stats = run_download(cfg, spark, input=str(full_run["src"]))
    assert stats["extra"]["shards_skipped"] == 4
    rows = shard_metadata(out)
    assert len(rows) == len(before)
    after = outcome(rows)
    slow = {r["uid"] for r in web["rows"] if r["fault"] in ("slow_first_byte", "slow_drip", "http_500_once")}
    assert {u: v for u, v in after.items() if u not in slow} == {u: v for u, v in before.items() if u not in slow}
    assert len(tar_samples(out)) == sum(1 for r in rows if r["status"] == "success")
    assert not (out / "_tmp").exists()


def test_other_input_into_same_output_is_refused(full_run, spark, tmp_path):
    other = write_input(tmp_path / "other", [{"url": "http://e.com/a.jpg", "text": "a"}])
    os.remove(full_run["out"] / "_SUCCESS")
    try:
        with pytest.raises(UserError, match="another input"):
            run_download(full_run["cfg"], spark, input=str(other))
    finally:
        (full_run["out"] / "_SUCCESS").write_text("")


@pytest.mark.parametrize("old_shards", [False, True], ids=["current", "written_before_phash"])
def test_retry_failed_refetches_only_transient_failures(web, spark, tmp_path, old_shards):
    """Also on shards written before the near-duplicate columns existed: carried over with them null."""
    from pipeline.sample_web import SampleWebServer

    with SampleWebServer(web["root"] / "site", port=0) as fresh:  # http_500_once fails once per server
        old = web["srv"].url
        picked = [r for r in web["rows"] if r["fault"] in (None, "http_500_once", "http_404")][:30]
        rows = [{k: v for k, v in r.items() if k not in ("expected", "fault")} | {"url": r["url"].replace(old, fresh.url)}
                for r in picked]
        src = write_input(tmp_path / "in", rows)
        cfg = cfg_for(tmp_path, [f"127.0.0.1:{fresh.port}"], retries=0, shard_size=10)
        first = run_download(cfg, spark, input=str(src))
        n500 = sum(r["fault"] == "http_500_once" for r in picked)
        assert n500 and first["drops"]["http_5xx"] == n500
        before = outcome(shard_metadata(tmp_path / "shards"))
        if old_shards:
            for f in (tmp_path / "shards").glob("[0-9]*.parquet"):  # the shards the retry will rewrite
                t = pq.read_table(f)
                if "http_5xx" in t.column("error_message").to_pylist():
                    pq.write_table(t.drop_columns(["phash", "colour_grid"]), f)
        second = run_download(cfg, spark, input=str(src), retry_failed=True)
    assert "http_5xx" not in second["drops"] and second["extra"]["retried"] == n500
    assert second["drops"].get("http_404") == first["drops"].get("http_404")
    after = outcome(shard_metadata(tmp_path / "shards"))
    assert len(after) == len(rows)
    for uid, (status, err, sha) in before.items():
        if err == "http_5xx":
            assert after[uid][0] == "success"
        else:
            assert after[uid] == (status, err, sha)
    samples = tar_samples(tmp_path / "shards")
    assert len(samples) == sum(1 for v in after.values() if v[0] == "success")
    hashed = {r["uid"]: r["phash"] is not None for r in shard_metadata(tmp_path / "shards") if r["status"] == "success"}
    retried = {uid for uid, (_, err, _) in before.items() if err == "http_5xx"}
    assert all(hashed[u] for u in retried)  # refetched images get their hash
    assert all(hashed.values()) != old_shards  # carried-over ones keep what their shard had


def test_parquet_output_format(web, spark, tmp_path):
    rows = [{k: v for k, v in r.items() if k not in ("expected", "fault")} for r in web["rows"]
            if r["fault"] in (None, "http_404")][:15]
    src = write_input(tmp_path / "in", rows)
    cfg = cfg_for(tmp_path, web["allow"], output_format="parquet", encode_format="webp", image_size=64,
                  resize_mode="center_crop", shard_size=8)
    stats = run_download(cfg, spark, input=str(src))
    out = tmp_path / "shards"
    assert not list(out.glob("*.tar")) and len(list(out.glob("[0-9]*.parquet"))) == 2
    t = pa.concat_tables(pq.read_table(f) for f in sorted(out.glob("[0-9]*.parquet")))
    assert set(SHARD_METADATA.names) <= set(t.column_names) and "webp" in t.column_names
    ok = [r for r in t.to_pylist() if r["status"] == "success"]
    assert len(ok) == stats["output_rows"] > 0
    for r in ok:
        assert hashlib.sha256(r["webp"]).hexdigest() == r["sha256"]
        with Image.open(io.BytesIO(r["webp"])) as im:
            assert im.format == "WEBP" and im.size == (64, 64)


def test_resizer_limits_give_their_reasons(tmp_path):
    """min_image_size → too_small, max_aspect_ratio → bad_aspect_ratio (one shard, run in-process)."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler

    from pipeline.download import ShardJob

    site = tmp_path / "site"
    site.mkdir()
    (site / "ok.png").write_bytes(_img("PNG", (120, 100)))
    (site / "small.png").write_bytes(_img("PNG", (40, 30)))
    (site / "wide.jpg").write_bytes(_img("JPEG", (400, 50)))
    (site / "page.html").write_bytes(b"<html><body>not an image</body></html>")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        names = ["ok.png", "small.png", "wide.jpg", "page.html", "missing.png"]
        src = write_input(tmp_path / "in", [{"url": f"{base}/{n}", "text": n} for n in names])
        cfg = cfg_for(tmp_path, [f"127.0.0.1:{srv.server_address[1]}"], min_image_size=50, max_aspect_ratio=3.0,
                      shard_size=10, image_size=64, resize_mode="keep_ratio", encode_format="png")
        _, specs = plan_shards(str(src), 10)
        out = tmp_path / "shards"
        stats = ShardJob(cfg.download, str(out), specs[0], len(specs)).run(retry_failed=False)
    finally:
        srv.shutdown()
        srv.server_close()
    got = {r["text"]: r["status"] if r["status"] == "success" else r["error_message"] for r in shard_metadata(out)}
    assert got == {"ok.png": "success", "small.png": "too_small", "wide.jpg": "bad_aspect_ratio",
                   "page.html": "not_image", "missing.png": "http_404"}
    assert stats["failures"] == {"too_small": 1, "bad_aspect_ratio": 1, "not_image": 1, "http_404": 1}
    ok = next(r for r in shard_metadata(out) if r["status"] == "success")
    assert (ok["original_width"], ok["original_height"], ok["width"], ok["height"]) == (120, 100, 77, 64)
    assert set(tar_samples(out)[ok["key"]]) == {"png", "txt", "json"}


def test_shards_past_100000_follow_the_one_naming_rule(tmp_path):
    """Shards 0 and 100,000 of a 100,001-shard download (run in-process): 6-digit file names and
    keys, pipeline.shards' rule, which score and select read back."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler

    from pipeline.download import ShardJob, ShardSpec
    from pipeline.shards import list_shards, sample_key

    site = tmp_path / "site"
    site.mkdir()
    (site / "a.png").write_bytes(_img("PNG", (120, 100)))

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    out = tmp_path / "shards"
    try:
        src = write_input(tmp_path / "in", [{"url": f"http://127.0.0.1:{port}/a.png", "text": f"t{i}"} for i in range(3)])
        cfg = cfg_for(tmp_path, [f"127.0.0.1:{port}"], shard_size=10, image_size=32)
        _, specs = plan_shards(str(src), 10)
        for shard in (0, 100_000):
            ShardJob(cfg.download, str(out), ShardSpec(shard, specs[0].segments), 100_001).run(retry_failed=False)
    finally:
        srv.shutdown()
        srv.server_close()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("_")) == [
        "000000.parquet", "000000.tar", "000000_stats.json", "100000.parquet", "100000.tar", "100000_stats.json"]
    rows = shard_metadata(out)
    keys = sorted(r["key"] for r in rows)
    assert keys == [sample_key(s, i, 100_001, 10) for s in (0, 100_000) for i in range(3)]
    assert keys[3:] == ["1000000", "1000001", "1000002"] and all(r["status"] == "success" for r in rows)
    assert set(tar_samples(out)) == {r["key"] for r in rows}
    assert [s for s, _ in list_shards(str(out))] == [0, 100_000]


def test_reused_albumentations_transforms_give_img2dataset_s_exact_output():
    """make_resizer reuses the Resizer's transforms: every mode, up- and downscaling, byte-identical."""
    import albumentations
    import img2dataset.resizer

    from pipeline.images import ReusedTransforms, make_resizer

    images = [_img("JPEG", (300, 200)), _img("PNG", (90, 160)), _img("JPEG", (64, 64)), _img("PNG", (1000, 30))]
    for mode in ("no", "keep_ratio", "center_crop", "border"):
        for size in (48, 256):
            dl = load_config(overrides={"download.resize_mode": mode, "download.image_size": size}).download
            resizer = make_resizer(dl)
            reused = img2dataset.resizer.A
            assert isinstance(reused, ReusedTransforms)
            ours = [resizer(io.BytesIO(b)) for b in images + images]  # twice: the second pass reuses transforms
            try:
                img2dataset.resizer.A = albumentations  # img2dataset as shipped
                theirs = [resizer(io.BytesIO(b)) for b in images + images]
            finally:
                img2dataset.resizer.A = reused
            assert ours == theirs, (mode, size)
            assert sum(r[0] is not None for r in ours) >= 6, (mode, size)
    assert reused.LongestMaxSize(max_size=8) is reused.LongestMaxSize(max_size=8)
    assert reused.LongestMaxSize(max_size=8) is not reused.LongestMaxSize(max_size=9)
