"""The sample web: deterministic bytes, WARC/WAT that parse and agree with the ground truth, and a
server whose every fault behaves as the ground truth says (real server on 127.0.0.1, real files)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import pyarrow.parquet as pq
import pytest
import requests
from PIL import Image
from warcio.archiveiterator import ArchiveIterator

from pipeline.cli import main as wit
from pipeline.sample_web import FAULT_STATUS, FAULTS, SampleWebServer, generate_sample_web
from pipeline.sample_web.generate import JUNK_KINDS, clean_text
from tests.conftest import free_port

CONTRACT_COLUMNS = [
    "page_url", "url", "wat_url", "raw_text", "text", "text_source", "true_caption", "matches_image", "lang",
    "junk_kind", "fault", "expected_status", "label", "image_path",
]
N_PAIRS = 600


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, int, dict]:
    port = free_port()
    out = tmp_path_factory.mktemp("sw") / "sample"
    summary = generate_sample_web(str(out), n_pairs=N_PAIRS, seed=7, base_url=f"http://127.0.0.1:{port}")
    return out, port, summary


@pytest.fixture(scope="module")
def gt(sample):
    return pq.read_table(sample[0] / "ground_truth.parquet").to_pylist()


@pytest.fixture(scope="module")
def server(sample):
    out, port, _ = sample
    with SampleWebServer(out / "site", port=port) as srv:
        yield srv


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- determinism -------------------------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_differs(sample, tmp_path):
    out, port, _ = sample
    base = f"http://127.0.0.1:{port}"
    again = tmp_path / "again"
    generate_sample_web(str(again), n_pairs=N_PAIRS, seed=7, base_url=base)
    first, second = _digests(out), _digests(again)
    assert first == second
    assert {"crawl.warc.gz", "crawl.warc.wat.gz", "ground_truth.parquet", "eval/classes.json",
            "eval_background/classes.json"} <= set(first)
    other = tmp_path / "other"
    generate_sample_web(str(other), n_pairs=N_PAIRS, seed=8, base_url=base)
    third = _digests(other)
    for name in ["crawl.warc.gz", "crawl.warc.wat.gz", "ground_truth.parquet", "eval/pairs.parquet",
                 "eval_background/pairs.parquet"]:
        assert third[name] != first[name], name
    images = [k for k in first if k.startswith("site/img/0000/")]
    assert sum(third.get(k) != first[k] for k in images) > len(images) // 2


def test_summary_and_layout(sample):
    out, port, summary = sample
    assert summary["pairs"] == N_PAIRS and (out / "_SUCCESS").exists()
    on_disk = json.loads((out / "sample.json").read_text())
    assert on_disk["args"] == {"n_pairs": N_PAIRS, "seed": 7, "base_url": f"http://127.0.0.1:{port}"}
    assert set(on_disk["counts"]["fault"]) == set(FAULTS) | {"none"}
    assert not list(out.parent.glob("*.tmp-*"))  # no temporaries left behind


# --- WARC / WAT --------------------------------------------------------------------------------

def _records(path: Path) -> list[tuple[str, dict, bytes, object]]:
    out = []
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f):
            out.append((rec.rec_type, dict(rec.rec_headers.headers), rec.content_stream().read(), rec.http_headers))
    return out


class _Imgs(HTMLParser):
    """A small reference reader of <base href> and <img> attributes (entities decoded, as browsers do)."""

    def __init__(self):
        super().__init__()
        self.base, self.imgs = None, []

    def handle_starttag(self, tag, attrs):
        if tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        if tag == "img":
            self.imgs.append(dict(attrs))


def _largest(srcset: str) -> str:
    cands = []
    for part in srcset.split(","):
        url, desc = part.split()
        cands.append((float(desc[:-1]), url))
    return max(cands)[1]


def test_warc_has_a_record_triple_per_page_and_agrees_with_ground_truth(sample, gt):
    out, _, summary = sample
    recs = _records(out / "crawl.warc.gz")
    assert recs[0][0] == "warcinfo"
    types = [r[0] for r in recs[1:]]
    assert types == ["request", "response", "metadata"] * summary["pages"]
    by_page: dict[str, list[dict]] = {}
    for row in gt:
        by_page.setdefault(row["page_url"], []).append(row)
    charsets = set()
    for kind, headers, body, http in recs:
        if kind == "metadata":
            fields = dict(line.split(": ", 1) for line in body.decode().splitlines())
            cld2 = json.loads(fields["languages-cld2"])
            assert cld2["reliable"] and cld2["languages"][0]["code-iso-639-3"]
            assert {"code", "text-bytes", "percent"} <= set(cld2["languages"][0])
        if kind != "response":
            continue
        page_url = headers["WARC-Target-URI"]
        charset = http.get_header("Content-Type").split("charset=")[1]
        charsets.add(charset)
        html_text = body.decode(charset)
        head = html_text[:400].replace('"', "")
        assert f"charset={charset}" in head  # the meta tag agrees with the HTTP header
        parser = _Imgs()
        parser.feed(html_text)
        got = []
        for a in parser.imgs:
            attr = _largest(a["srcset"]) if "srcset" in a else a.get("data-src") or a["src"]
            url = urldefrag(urljoin(parser.base or page_url, attr))[0]
            alt = a.get("alt") or ""
            text, source = (alt, "alt") if alt or "title" not in a else (a["title"], "title")
            got.append((url, clean_text(text), source))
        want = [(r["url"], r["text"], r["text_source"]) for r in by_page[page_url]]
        assert got == want, page_url
    assert len(by_page) == summary["pages"]
    assert charsets & {"windows-1251", "shift_jis", "euc-jp"}  # some pages are not UTF-8


def test_wat_links_agree_with_ground_truth(sample, gt):
    out, _, summary = sample
    recs = _records(out / "crawl.warc.wat.gz")
    assert recs[0][0] == "warcinfo"
    metas = [r for r in recs if r[0] == "metadata"]
    assert len(metas) == summary["pages"]
    want: dict[str, list] = {}
    for row in gt:
        want.setdefault(row["page_url"], []).append(row)
    bases = 0
    for _, headers, body, _ in metas:
        assert headers["Content-Type"] == "application/json"
        env = json.loads(body)["Envelope"]
        page_url = env["WARC-Header-Metadata"]["WARC-Target-URI"]
        meta = env["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]
        base = meta["Head"].get("Base")
        bases += base is not None
        imgs = [link for link in meta["Links"] if link["path"] == "IMG@/src"]
        assert any(link["path"] == "A@/href" for link in meta["Links"])
        rows = want[page_url]
        assert len(imgs) == len(rows)
        for link, row in zip(imgs, rows, strict=True):
            url = link["url"]
            resolved = None if url.startswith("data:") else urldefrag(urljoin(base or page_url, url))[0]
            assert resolved == row["wat_url"]
            alt = link.get("alt") or ""
            text = alt if alt or "title" not in link else link["title"]
            assert clean_text(text) == row["text"]
    assert bases > 0


# --- ground truth ------------------------------------------------------------------------------

def test_ground_truth_columns_and_shares(sample, gt):
    out, _, _ = sample
    assert len(gt) == N_PAIRS
    for col in CONTRACT_COLUMNS:
        assert col in gt[0], col
    langs = {r["lang"] for r in gt}
    assert {"en", "fr", "de", "es", "ja", "ru"} <= langs
    assert {r["junk_kind"] for r in gt} >= set(JUNK_KINDS)
    assert {r["fault"] for r in gt} == set(FAULTS) | {None}
    n = len(gt)
    assert 0.7 < sum(r["lang"] == "en" for r in gt) / n < 0.95
    assert 0.05 < sum(r["lang"] in {"fr", "de", "es", "ja", "ru"} for r in gt) / n < 0.16
    mismatched = [r for r in gt if not r["matches_image"] and r["junk_kind"] is None]
    assert 0.25 < len(mismatched) / n < 0.55  # loose and unrelated captions (test_caption_mix_follows_its_shares)
    assert 0.08 < sum(r["fault"] is not None for r in gt) / n < 0.12
    assert any(r["text_source"] == "title" for r in gt)
    faults = json.loads((out / "site" / "faults.json").read_text())
    for r in gt:
        assert r["expected_status"] == (FAULT_STATUS[r["fault"]] if r["fault"] else "success")
        assert r["text"] == clean_text(r["raw_text"])
        assert r["url"].startswith("http://127.0.0.1:") and "#" not in r["url"]
        if r["fault"]:
            assert faults[urlsplit(r["url"]).path] == r["fault"]
        if r["image_path"]:
            assert (out / "site" / r["image_path"]).is_file()
        else:
            assert r["fault"] is not None
        if r["junk_kind"] in ("empty", "whitespace"):
            assert r["text"] == ""
        if r["junk_kind"] == "long":
            assert len(r["raw_text"]) == 5000 and len(r["text"]) == 1000
        if r["junk_kind"] == "duplicate":
            assert any(o["url"] == r["url"] and o["text"] == r["text"] and o["pair_id"] < r["pair_id"] for o in gt)
        if r["junk_kind"] is None and r["lang"] == "en" and r["matches_image"]:
            assert r["true_caption"].lower() in r["text"].lower()


def test_caption_mix_follows_its_shares(sample, gt):
    """English captions are matching, loose or unrelated in captions.CAPTION_MIX's shares, each
    labelled (caption_kind, caption_detail), matches_image only on matching ones, counted in sample.json."""
    from pipeline.sample_web.captions import CAPTION_MIX, LOOSE_KINDS, UNRELATED_KINDS

    _, _, summary = sample
    english = [r for r in gt if r["lang"] == "en" and r["junk_kind"] is None and r["fault"] is None
               and r["copy_kind"] is None]
    assert len(english) > 250
    for kind, share in CAPTION_MIX.items():
        got = sum(r["caption_kind"] == kind for r in english) / len(english)
        assert abs(got - share) < 0.08, (kind, got, share)
    details = {r["caption_detail"] for r in english if r["caption_kind"] != "matching"}
    assert details == set(LOOSE_KINDS) | set(UNRELATED_KINDS)
    for r in gt:
        assert r["matches_image"] == (r["caption_kind"] == "matching") or r["junk_kind"] is not None
        assert (r["caption_kind"] is None) == (r["junk_kind"] is not None and r["junk_kind"] != "duplicate")
        if r["caption_kind"] in ("loose", "unrelated") and r["junk_kind"] is None:
            assert r["true_caption"].lower() not in r["text"].lower()
            assert r["caption_detail"] in (LOOSE_KINDS if r["caption_kind"] == "loose" else UNRELATED_KINDS)
        if r["caption_kind"] == "matching":
            assert r["caption_detail"] is None
    assert summary["counts"]["caption_kind"] == {
        k: sum((r["caption_kind"] or "none") == k for r in gt) for k in ("loose", "matching", "none", "unrelated")}


def test_copies_and_look_alikes_are_planted_and_labelled(sample, gt):
    """Copies (near_dup_of / eval_copy_of, copy_kind) and look-alikes (look_alike_of /
    eval_look_alike_of, look_alike_kind): each labelled with what it copies or resembles, which is
    another picture for a look-alike (a different scene, same label rules as any picture)."""
    from pipeline.sample_web.scenes import COPY_KINDS, LOOK_ALIKE_KINDS

    out, _, _ = sample
    by_id = {r["pair_id"]: r for r in gt}
    copies = [r for r in gt if r["copy_kind"] and r["junk_kind"] is None]
    looks = [r for r in gt if r["look_alike_kind"] and r["junk_kind"] is None]
    assert copies and looks
    assert {r["copy_kind"] for r in copies} <= set(COPY_KINDS) and {r["look_alike_kind"] for r in looks} <= set(LOOK_ALIKE_KINDS)
    for r in copies:
        assert (r["near_dup_of"] is None) != (r["eval_copy_of"] is None) and r["look_alike_kind"] is None
    for r in looks:
        assert (r["look_alike_of"] is None) != (r["eval_look_alike_of"] is None) and r["copy_kind"] is None
        if r["look_alike_of"] is not None:
            source = by_id[r["look_alike_of"]]
            assert source["pair_id"] < r["pair_id"]
            a, b = (Image.open(out / "site" / x["image_path"]).convert("RGB") for x in (source, r))
            assert a.resize((48, 48)).tobytes() != b.resize((48, 48)).tobytes()  # another picture
        else:
            assert r["eval_look_alike_of"].split("/", 1)[0] in ("eval", "eval_background")
    assert 0.02 < len(looks) / len(gt) < 0.10


def test_small_sample_has_every_fault(tmp_path):
    s = generate_sample_web(str(tmp_path / "s"), n_pairs=200, seed=3)
    assert set(s["counts"]["fault"]) == set(FAULTS) | {"none"}


def test_images_decode_and_eval_split(sample, gt):
    out, _, _ = sample
    formats = set()
    for r in gt[:150]:
        if r["image_path"] and r["fault"] is None:
            with Image.open(out / "site" / r["image_path"]) as im:
                im.load()
                formats.add(im.format)
    assert formats == {"JPEG", "PNG", "WEBP"}
    crawl = {(out / "site" / r["image_path"]).read_bytes() for r in gt if r["image_path"]}
    for split, n_classes in (("eval", 8), ("eval_background", 10)):  # labelled by shape; by background colour
        classes = json.loads((out / split / "classes.json").read_text())
        assert classes == sorted(classes) and len(classes) == n_classes
        assert sorted(p.name for p in (out / split).iterdir() if p.is_dir()) == classes
        pairs = pq.read_table(out / split / "pairs.parquet").to_pylist()
        assert len(pairs) == 25 * n_classes
        for p in pairs:
            data = (out / split / p["image"]).read_bytes()
            assert data not in crawl
            assert p["image"].split("/")[0] == classes[p["label"]] and classes[p["label"]] in p["caption"]
    assert {r["label"] for r in gt} <= set(json.loads((out / "eval" / "classes.json").read_text()))


# --- the server --------------------------------------------------------------------------------

def _one(gt, fault):
    return next(r for r in gt if r["fault"] == fault)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _decodes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except Exception:
        return False


def test_plain_pages_and_images(server, sample, gt):
    out, _, _ = sample
    ok = [r for r in gt if r["fault"] is None and r["image_path"]][:20]
    for r in ok:
        resp = requests.get(r["url"], timeout=5)
        assert resp.status_code == 200 and resp.content == (out / "site" / r["image_path"]).read_bytes()
        assert resp.headers["Content-Type"].startswith("image/")
    for r in [r for r in gt if r["wat_url"] and r["fault"] is None][:10]:
        assert requests.get(r["wat_url"], timeout=5).status_code == 200
    page = requests.get(gt[0]["page_url"], timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html; charset=")


@pytest.mark.slow
def test_every_fault_behaves_as_ground_truth_says(server, sample, gt):
    out, port, _ = sample
    get = requests.get
    r = _one(gt, "http_404")
    assert get(r["url"], timeout=5).status_code == 404

    r = _one(gt, "http_500_once")
    assert get(r["url"], timeout=5).status_code == 500
    again = get(r["url"], timeout=5)
    assert again.status_code == 200 and _decodes(again.content)

    r = _one(gt, "slow_first_byte")
    with pytest.raises(requests.exceptions.ReadTimeout):
        get(r["url"], timeout=0.3)
    late = get(r["url"], timeout=10)
    assert late.status_code == 200 and _decodes(late.content)

    r = _one(gt, "slow_drip")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {urlsplit(r['url']).path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        got = b""
        t_end = time.monotonic() + 1.6
        while time.monotonic() < t_end:
            s.settimeout(max(0.01, t_end - time.monotonic()))
            try:
                got += s.recv(65536)
            except TimeoutError:
                break
        head, _, body = got.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        assert b"200" in head.split(b"\r\n")[0] and 0 < len(body) <= 6 < length  # it drips

    r = _one(gt, "truncated")
    resp = get(r["url"], timeout=5)
    full = (out / "site" / r["image_path"]).read_bytes()
    assert resp.status_code == 200 and len(resp.content) == len(full) // 2 and not _decodes(resp.content)

    r = _one(gt, "html_not_image")
    resp = get(r["url"], timeout=5)
    assert resp.headers["Content-Type"] == "image/jpeg" and resp.content.lstrip().startswith(b"<!DOCTYPE html")
    assert not _decodes(resp.content)

    r = _one(gt, "wrong_content_type")
    resp = get(r["url"], timeout=5)
    assert resp.headers["Content-Type"] == "text/plain" and _decodes(resp.content)

    r = _one(gt, "redirect_chain")
    resp = get(r["url"], timeout=5)
    assert resp.status_code == 200 and len(resp.history) == 3 and _decodes(resp.content)

    r = _one(gt, "redirect_loop")
    with requests.Session() as sess:
        sess.max_redirects = 5
        with pytest.raises(requests.exceptions.TooManyRedirects):
            sess.get(r["url"], timeout=5)

    path = lambda f: urlsplit(_one(gt, f)["url"]).path  # noqa: E731
    loc = lambda f: get(_one(gt, f)["url"], timeout=5, allow_redirects=False).headers["Location"]  # noqa: E731
    assert loc("redirect_other_port") == f"http://127.0.0.1:{port + 1}{path('redirect_other_port')}"
    assert loc("redirect_private") == f"http://10.0.0.1{path('redirect_private')}"
    assert loc("redirect_file") == "file:///etc/passwd"

    r = _one(gt, "noai")
    resp = get(r["url"], timeout=5)
    assert resp.headers["X-Robots-Tag"] == "noai" and _decodes(resp.content)

    r = _one(gt, "bomb")
    resp = get(r["url"], timeout=5)
    w, h = _png_size(resp.content)
    assert w * h > 100_000_000 and len(resp.content) < 1_000_000

    declared = set()
    for r in [x for x in gt if x["fault"] == "huge_body"][:4]:
        with get(r["url"], timeout=5, stream=True) as resp:
            declared.add("Content-Length" in resp.headers)
            if "Content-Length" in resp.headers:
                assert int(resp.headers["Content-Length"]) > 100_000_000
            n = 0
            for chunk in resp.iter_content(1 << 20):
                n += len(chunk)
                if n > 25_000_000:
                    break
            assert n > 25_000_000  # far over the default 20 MB cap
    assert declared == {True, False}


def test_server_starts_and_stops_cleanly_many_times(sample, gt):
    out, _, _ = sample
    drip = urlsplit(_one(gt, "slow_drip")["url"]).path
    before = threading.active_count()
    for i in range(15):
        with SampleWebServer(out, port=0) as srv:
            assert requests.get(srv.url + "/pages/0000000.html", timeout=5).status_code == 200
            if i % 5 == 0:  # a stalled client must not keep the server (or its threads) alive
                resp = requests.get(srv.url + drip, timeout=5, stream=True)
        if i % 5 == 0:
            resp.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


def test_stall_handlers_stop_when_client_disconnects(sample, gt):
    out, _, _ = sample
    with SampleWebServer(out, port=0) as srv:
        before = threading.active_count()
        for fault in ("slow_drip", "huge_body"):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                s.sendall(f"GET {urlsplit(_one(gt, fault)['url']).path} HTTP/1.0\r\n\r\n".encode())
                assert s.recv(1024).startswith(b"HTTP/1.0 200")
            # the handler notices the closed socket on its next writes and ends
        deadline = time.monotonic() + 10
        while threading.active_count() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= before


# --- CLI ---------------------------------------------------------------------------------------

def test_wit_sample_cli(tmp_path, capsys):
    out = tmp_path / "s"
    assert wit(["sample", str(out), "--n-pairs", "40", "--seed", "2", "--base-url", "http://127.0.0.1:9999"]) == 0
    meta = json.loads((out / "sample.json").read_text())
    assert meta["args"] == {"n_pairs": 40, "seed": 2, "base_url": "http://127.0.0.1:9999"}
    assert wit(["sample", str(out), "--n-pairs", "40", "--seed", "2", "--base-url", "http://127.0.0.1:9999"]) == 0
    assert "already complete" in capsys.readouterr().out
    # a sample made before eval_background/ existed is made again, not taken as complete
    shutil.rmtree(out / "eval_background")
    assert wit(["sample", str(out), "--n-pairs", "40", "--seed", "2", "--base-url", "http://127.0.0.1:9999"]) == 0
    assert "already complete" not in capsys.readouterr().out
    assert (out / "eval_background" / "classes.json").is_file()
    (out / "sample.json").write_text("{not json")  # a damaged sample.json: made again, no crash
    assert wit(["sample", str(out), "--n-pairs", "40", "--seed", "2", "--base-url", "http://127.0.0.1:9999"]) == 0
    assert json.loads((out / "sample.json").read_text())["args"]["n_pairs"] == 40
    # default folder: <output_dir>/sample
    assert wit(["sample", "-o", str(tmp_path / "run"), "--n-pairs", "20"]) == 0
    assert (tmp_path / "run" / "sample" / "_SUCCESS").exists()
    assert wit(["serve", str(tmp_path / "missing")]) == 2
    assert "sample folder not found" in capsys.readouterr().err


def test_wit_serve_cli(sample):
    out, _, _ = sample
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", str(out), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=Path(__file__).resolve().parent.parent)
    try:
        line = ""
        while "serving" not in line:
            line = proc.stdout.readline()
            assert line, "wit serve exited early"
        assert f"http://127.0.0.1:{port}" in line
        assert requests.get(f"http://127.0.0.1:{port}/pages/0000001.html", timeout=5).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_no_look_alike_is_planted_when_every_try_is_a_picture_drawn_before(tmp_path):
    """A look-alike labelled distinct must not be the same picture as one drawn before; when every
    try is (here: every other background of a same_object look-alike is taken), none is planted."""
    from pipeline.sample_web import scenes
    from pipeline.sample_web.generate import _Generator

    gen = _Generator(tmp_path, 10, 0, "http://127.0.0.1:9", 1)
    source = scenes.Scene("star", "red", "blue", 1, "large", ((0.5, 0.5, 0.3, 0.0),))
    first = gen.look_alike_of(source, "same_object")
    assert first is not None and first.background not in ("red", "blue") and not gen.clashes(first)
    for bg in scenes.COLOUR_NAMES:
        gen.remember(scenes.Scene("star", "red", bg, 1, "large", source.objects))
    assert gen.look_alike_of(source, "same_object") is None
