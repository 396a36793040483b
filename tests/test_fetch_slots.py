"""The job-wide per-host cap shared at run time (pipeline/fetch/slots.py): the slot files themselves, the
host scheduler holding one slot per request, and the download stage sharing one cap between its tasks.

Other processes are real processes (a killed one is killed with SIGKILL); the servers are real HTTP
servers on 127.0.0.1 that count the requests they are answering at once. No assertion on time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.download import run_download
from pipeline.fetch import FetchResult, HostScheduler, HostSlots, Politeness, job_slots_folder
from tests.test_download import cfg_for, shard_metadata, write_input

ROOT = Path(__file__).resolve().parent.parent

_HOLD = """
import sys, time
from pipeline.fetch import HostSlots
slots = HostSlots(sys.argv[1], int(sys.argv[2]))
held = [slots.try_acquire(sys.argv[3]) for _ in range(int(sys.argv[2]))]
print("held" if None not in held else "refused", flush=True)
time.sleep(600)
"""

_FETCH = """
import json, sys
from pipeline.config import DownloadConfig
from pipeline.fetch import Fetcher, HostSlots
folder, cap, urls = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
dl = DownloadConfig(consent=False, job_host_connections=cap, allow_hosts=["127.0.0.1"], timeout_s=30, retries=0)
f = Fetcher.from_config(dl, host_slots=HostSlots(folder, cap))
print(json.dumps(sorted({r.reason or "ok" for _, r in f.fetch_all(urls, threads=8)})))
"""


def _python(code: str, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, **kw)


@pytest.fixture
def holder(tmp_path):
    """Starts another process that takes every slot of a host and keeps them until killed."""
    procs: list[subprocess.Popen] = []

    def hold(folder: str, per_host: int, host: str) -> subprocess.Popen:
        procs.append(_python(_HOLD, folder, str(per_host), host))
        assert procs[-1].stdout.readline().strip() == "held"
        return procs[-1]

    yield hold
    for p in procs:
        p.kill()
        p.wait()


class _Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.busy += 1
            srv.most_busy = max(srv.most_busy, srv.busy)
            srv.requests += 1
        try:
            time.sleep(0.05)  # long enough that requests of several tasks overlap
            body = srv.body
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            with srv.lock:
                srv.busy -= 1


@pytest.fixture
def server():
    """An image host on 127.0.0.1 that counts the requests it is answering at once (``most_busy``)."""
    from tests.test_fetch_hosts import JPEG

    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    srv.daemon_threads = True
    srv.lock, srv.busy, srv.most_busy, srv.requests, srv.body = threading.Lock(), 0, 0, 0, JPEG
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv, path: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


# --- the slots ------------------------------------------------------------------------------------------


def test_a_host_has_per_host_slots_and_a_released_one_is_free_again(tmp_path):
    slots = HostSlots(str(tmp_path), 3)
    held = [slots.try_acquire("a.test") for _ in range(3)]
    assert None not in held and len(set(held)) == 3
    assert slots.try_acquire("a.test") is None  # threads of one process exclude each other too
    assert slots.try_acquire("b.test") is not None  # each host its own slots
    slots.release(held[1])
    again = slots.try_acquire("a.test")
    assert again is not None and slots.try_acquire("a.test") is None
    assert slots.try_acquire("c.test", limit=1) is not None and slots.try_acquire("c.test", limit=1) is None
    assert slots.try_acquire("c.test") is not None  # limit=1 (a Crawl-delay host) uses its first slot only


def test_another_process_holds_slots_and_a_killed_holder_releases_them(tmp_path, holder):
    slots = HostSlots(str(tmp_path), 2)
    other = holder(str(tmp_path), 2, "busy.test")
    assert slots.try_acquire("busy.test") is None
    assert slots.try_acquire("free.test") is not None
    other.kill()  # SIGKILL: no release of its own; the kernel drops its locks with its descriptors
    other.wait()
    assert slots.try_acquire("busy.test") is not None and slots.try_acquire("busy.test") is not None


@pytest.mark.parametrize("host", ["", "x" * 5000, "bücher.example", "\udcff.test", "../../etc/passwd", "a/b\x00c",
                                  "ⓛⓞⓒⓐⓛⓗⓞⓢⓣ"])
def test_any_host_string_gets_its_own_hashed_slot_files_in_the_folder(tmp_path, host):
    slots = HostSlots(str(tmp_path), 2)
    assert slots.try_acquire(host) is not None and slots.try_acquire(host) is not None
    assert slots.try_acquire(host) is None and slots.try_acquire(host + ".") is not None  # another host, its own
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 3 and all(re.fullmatch(r"[0-9a-f]{32}\.[0-9]+", n) for n in names)


def test_a_pause_is_seen_through_any_slot_of_the_host_and_only_lengthened(tmp_path):
    slots = HostSlots(str(tmp_path), 2)
    slots.pause("limited.test", 30)
    slots.pause("limited.test", 5)  # a shorter one later does not shorten it
    tokens = [slots.try_acquire("limited.test") for _ in range(2)]
    assert all(25 < slots.paused_for(t) <= 30 for t in tokens)
    other = slots.try_acquire("other.test")
    assert slots.paused_for(other) == 0.0


def test_bad_settings_and_a_missing_folder_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        HostSlots(str(tmp_path), 0)
    with pytest.raises(FileNotFoundError, match="no folder"):
        HostSlots(str(tmp_path / "gone"), 2)


def test_the_jobs_folder_is_removed_at_its_end_also_on_failure():
    with job_slots_folder() as folder:
        HostSlots(folder, 2).try_acquire("a.test")
        assert os.path.isdir(folder)
    assert not os.path.exists(folder)
    with pytest.raises(RuntimeError), job_slots_folder() as failed:
        raise RuntimeError("the job failed")
    assert not os.path.exists(failed)


# --- the scheduler with slots ------------------------------------------------------------------------------


class _Recorder:
    """A fetch callable for HostScheduler: answers after ``delay`` s, records the order and per host the
    most attempts running at once."""

    def __init__(self, delay: float = 0.02):
        self.delay, self.lock, self.order, self.running, self.most = delay, threading.Lock(), [], {}, {}

    def __call__(self, url: str) -> FetchResult:
        host = url.split("/")[2]
        with self.lock:
            self.order.append(url)
            self.running[host] = self.running.get(host, 0) + 1
            self.most[host] = max(self.most.get(host, 0), self.running[host])
        time.sleep(self.delay)
        with self.lock:
            self.running[host] -= 1
        return FetchResult(url, data=b"x", http_status=200, connected=True)


def test_a_host_held_by_another_process_waits_while_others_go_and_gets_its_turn_when_freed(tmp_path, holder):
    other = holder(str(tmp_path), 2, "held.test")
    fetch = _Recorder()
    scheduler = HostScheduler(fetch, Politeness(connections=2, retries=0), slots=HostSlots(str(tmp_path), 2))
    urls = [f"http://held.test/{i}" for i in range(6)] + [f"http://free.test/{i}" for i in range(10)]
    scheduler.load(urls, lambda u: u)
    done = []
    for url, _ in scheduler.run(threads=4, process=None):
        done.append(url)
        if len(done) == 10:  # every free.test URL: held.test waited without being asked
            assert sorted(done) == sorted(urls[6:]) and not any("held.test" in u for u in fetch.order)
            other.kill()
            other.wait()
    assert sorted(done) == sorted(urls) and fetch.most["held.test"] <= 2
    assert HostSlots(str(tmp_path), 2).try_acquire("held.test") is not None  # every slot given back


def test_two_schedulers_share_the_cap_and_a_crawl_delay_host_gets_one_request_at_a_time(tmp_path):
    fetch = _Recorder(0.03)
    pace = dict(connections=3, retries=0, delay_of=lambda host: 0.001 if host == "delay.test" else 0.0)
    urls = [f"http://{h}/{i}" for i in range(12) for h in ("delay.test", "many.test")]
    results: list[list] = []

    def task():
        scheduler = HostScheduler(fetch, Politeness(**pace), slots=HostSlots(str(tmp_path), 3))
        scheduler.load(urls, lambda u: u)
        results.append(list(scheduler.run(threads=6, process=None)))

    tasks = [threading.Thread(target=task) for _ in range(2)]
    for t in tasks:
        t.start()
    for t in tasks:
        t.join()
    assert [len(r) for r in results] == [24, 24] and all(r.ok for got in results for _, r in got)
    assert fetch.most["many.test"] <= 3 and fetch.most["delay.test"] == 1


def test_a_retry_after_answered_to_one_task_pauses_the_host_for_the_others(tmp_path):
    """Task A's 429 (Retry-After 0.5 s) pauses the host for task B too: B's first request to it waits for
    the pause (a lower bound); a pause longer than B's budget fails B's URLs of the host at once."""
    starts: dict[str, float] = {}

    def fetch(url: str) -> FetchResult:
        starts.setdefault(url, time.monotonic())
        if url == "http://limited.test/a":
            return FetchResult(url, reason="rate_limited", http_status=429, connected=True, retry_after=0.5)
        return FetchResult(url, data=b"x", http_status=200, connected=True)

    def task(urls: list[str], budget_s: float = 0.2) -> dict[str, str]:
        scheduler = HostScheduler(fetch, Politeness(connections=2, retries=0, budget_s=budget_s),
                                  slots=HostSlots(str(tmp_path), 2))
        scheduler.load(urls, lambda u: u)
        return {url: r.reason or "ok" for url, r in scheduler.run(threads=2, process=None)}

    t0 = time.monotonic()
    assert task(["http://limited.test/a"]) == {"http://limited.test/a": "rate_limited"}  # 0.5 s > its budget
    assert task(["http://limited.test/b", "http://free.test/b"]) == {"http://limited.test/b": "rate_limited",
                                                                    "http://free.test/b": "ok"}
    assert "http://limited.test/b" not in starts  # failed without a request: the pause outlasts its budget
    assert task(["http://limited.test/c"], budget_s=30) == {"http://limited.test/c": "ok"}
    assert starts["http://limited.test/c"] - t0 >= 0.5  # asked once the shared pause was over


def test_two_processes_never_exceed_the_cap_at_a_real_server(tmp_path, server):
    """Two tasks (processes) fetch 24 URLs each of one host with 8 threads: the server never answers more
    than the job-wide cap at once."""
    runs = [_python(_FETCH, str(tmp_path), "2", json.dumps([_url(server, f"/{k}/{i}.jpg") for i in range(24)]))
            for k in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in runs]
    assert [p.returncode for p in runs] == [0, 0] and [json.loads(o) for o in outs] == [["ok"], ["ok"]]
    assert server.requests == 48 and server.most_busy <= 2


# --- the download stage ---------------------------------------------------------------------------------


def test_the_download_tasks_share_the_job_wide_cap_on_a_local_master(spark, tmp_path, server):
    """Three shards (two Spark tasks at once) of one host, job_host_connections=2: the tasks share it through
    the job's slots (each may use both), the host never answers more than 2 at once, the folder is gone after."""
    before = set(Path(tempfile.gettempdir()).glob("wit-host-slots-*"))
    src = write_input(tmp_path / "in", [{"url": _url(server, f"/{i}.jpg"), "text": f"c {i}"} for i in range(30)])
    cfg = cfg_for(tmp_path, ["127.0.0.1"], consent=False, shard_size=10, job_host_connections=2, host_connections=1)
    run_download(cfg, spark, input=str(src))
    rows = shard_metadata(tmp_path / "shards")
    assert len(rows) == 30 and {r["status"] for r in rows} == {"success"}
    assert server.requests == 30 and server.most_busy <= 2
    assert set(Path(tempfile.gettempdir()).glob("wit-host-slots-*")) <= before
