"""End to end: kill -9 a `wit download` mid-run and rerun it; real Wikipedia images replayed from a WARC."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.config import load_config
from pipeline.download import run_download
from pipeline.ids import make_uid
from tests.conftest import free_port
from tests.test_download import shard_metadata, tar_samples, write_input

pytestmark = pytest.mark.slow


def _serve(handler) -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


class _SlowStatic(SimpleHTTPRequestHandler):
    """The sample site, 0.3 s per image: slow enough to kill the job between shards."""

    def log_message(self, *a):
        pass

    def do_GET(self):
        time.sleep(0.3)
        super().do_GET()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_tree(pid: int) -> None:
    """kill -9 the process we started and everything under it, process groups included."""
    own = os.getpgid(0)
    for p in [pid, *_descendants(pid)]:
        try:
            group = os.getpgid(p)
            if group != own:
                os.killpg(group, signal.SIGKILL)
            else:
                os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wit() -> list[str]:
    exe = Path(sys.executable).parent / "wit"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline.cli"]


def test_kill_9_mid_run_then_rerun_gives_the_same_samples(tmp_path, spark):
    from pipeline.sample_web import SampleWebServer, generate_sample_web

    port = free_port()
    root = tmp_path / "web"
    generate_sample_web(str(root), n_pairs=120, seed=1, base_url=f"http://127.0.0.1:{port}")
    gt = [r for r in pq.read_table(root / "ground_truth.parquet").to_pylist() if r["fault"] is None][:80]
    slow = _serve(partial(_SlowStatic, directory=str(root / "site")))
    slow_url = f"http://127.0.0.1:{slow.server_address[1]}"
    rows = [{"uid": make_uid(r["url"], str(i)), "url": r["url"].replace(f"http://127.0.0.1:{port}", slow_url),
             "text": r["true_caption"]} for i, r in enumerate(gt)]
    src = write_input(tmp_path / "in", rows)
    out = tmp_path / "run" / "shards"
    cmd = _wit() + ["download", "--input", str(src), "-o", str(tmp_path / "run"), "--master", "local[2]",
                    "--shard-size", "10", "--threads", "2", "--allow-host", f"127.0.0.1:{slow.server_address[1]}"]
    try:
        proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            done = list(out.glob("[0-9]*.parquet")) if out.exists() else []
            if done:
                break
            time.sleep(0.05)
        _kill_tree(proc.pid)  # the driver, its JVM, PySpark's daemon (own process group) and its workers
        proc.wait(30)
        n_done = len(list(out.glob("[0-9]*.parquet")))
        assert 1 <= n_done < 8, f"not killed mid-run ({n_done} shards complete)"
        assert not (out / "_SUCCESS").exists()

        # The rerun (in this process, to spare a second JVM start): same input, same settings.
        cfg = load_config(overrides={"output_dir": str(tmp_path / "run"), "download.shard_size": 10, "download.threads": 2,
                                     "download.allow_hosts": [f"127.0.0.1:{slow.server_address[1]}"]})
        stats = run_download(cfg, spark, input=str(src))
        assert 1 <= stats["extra"]["shards_skipped"] == n_done
    finally:
        slow.shutdown()
        slow.server_close()
    assert (out / "_SUCCESS").exists() and not (out / "_tmp").exists()

    # The reference: the same input downloaded in one go (from a fast server serving the same files).
    with SampleWebServer(root / "site", port=port):
        ref_rows = [dict(r, url=r["url"].replace(slow_url, f"http://127.0.0.1:{port}")) for r in rows]
        ref_src = write_input(tmp_path / "ref_in", ref_rows)
        cfg = load_config(overrides={"output_dir": str(tmp_path / "ref"), "download.shard_size": 10,
                                     "download.allow_hosts": [f"127.0.0.1:{port}"]})
        run_download(cfg, spark, input=str(ref_src))
    got, ref = shard_metadata(out), shard_metadata(tmp_path / "ref" / "shards")
    assert len(got) == len(rows) == len({r["uid"] for r in got})
    assert {(r["uid"], r["key"], r["status"], r["sha256"]) for r in got} == \
        {(r["uid"], r["key"], r["status"], r["sha256"]) for r in ref}
    samples = tar_samples(out)
    assert set(samples) == {r["key"] for r in got if r["status"] == "success"}
    assert len(samples) == len(rows)


# --- the Mona Lisa capture, replayed --------------------------------------------------------------------


def _archive(warc: Path) -> dict[str, tuple[int, str, bytes]]:
    from warcio.archiveiterator import ArchiveIterator

    out = {}
    with open(warc, "rb") as f:
        for rec in ArchiveIterator(f):
            if rec.rec_type == "response" and rec.http_headers is not None:
                parts = urlsplit(rec.rec_headers.get_header("WARC-Target-URI"))
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                out[path] = (int(rec.http_headers.get_statuscode()),
                             rec.http_headers.get_header("Content-Type") or "application/octet-stream",
                             rec.content_stream().read())
    return out


def _candidates(warc: Path) -> list[dict]:
    from pipeline.extract import Options, extract_file

    return [r for batch in extract_file(str(warc), "warc", Options()) for r in batch.to_pylist()]


def test_mona_lisa_capture_extract_then_download(shared_data, spark, tmp_path):
    warc = shared_data / "warc" / "ukwa_wikipedia-mona-lisa.warc.gz"
    if not warc.exists():
        pytest.skip(f"{warc} not present")
    archive = _archive(warc)

    class Replay(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            status, ctype, body = archive.get(self.path, (404, "text/plain", b"not archived"))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = _serve(Replay)
    local = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        cands = _candidates(warc)
        assert len(cands) >= 10 and all(c["url"].startswith("http") for c in cands)
        by_uid = {}
        for c in cands:  # the archived hosts (upload.wikimedia.org …) become the replay server
            p = urlsplit(c["url"])
            by_uid[c["uid"]] = p.path + (f"?{p.query}" if p.query else "")
            c["url"] = local + by_uid[c["uid"]]
        src = write_input(tmp_path / "candidates", cands)
        cfg = load_config(overrides={"output_dir": str(tmp_path), "download.shard_size": 8,
                                     "download.allow_hosts": [f"127.0.0.1:{srv.server_address[1]}"]})
        stats = run_download(cfg, spark, input=str(src))
    finally:
        srv.shutdown()
        srv.server_close()
    rows = shard_metadata(tmp_path / "shards")
    assert len(rows) == len(cands)
    ok = [r for r in rows if r["status"] == "success"]
    assert len(ok) >= 5 and stats["output_rows"] == len(ok)
    for r in rows:
        archived = archive.get(by_uid[r["uid"]])
        if archived is None:
            assert r["error_message"] == "http_404"
        elif r["status"] == "success":
            with Image.open(io.BytesIO(archived[2])) as im:
                assert (r["original_width"], r["original_height"]) == im.size
    samples = tar_samples(tmp_path / "shards")
    for r in ok:
        assert hashlib.sha256(samples[r["key"]]["jpg"]).hexdigest() == r["sha256"]
        assert samples[r["key"]]["txt"].decode() == r["text"]
