"""Fetching from many hosts: DNS that no tarpit can starve, per-host politeness, Retry-After, the circuit
breaker and robots.txt under the host scheduler.

Real HTTP servers on their own loopback addresses (127.0.0.x) count the connections they see; real DNS
answers come from a DnsServer this test runs (``download.dns_servers``). Assertions are about outcomes
and what the servers saw, never about how long something took (a few lower bounds on waits the fetcher
must make are the exception: a loaded machine only makes those longer).
"""

from __future__ import annotations

import io
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from pipeline.config import DownloadConfig
from pipeline.download import run_download
from pipeline.fetch import REASONS, TRANSIENT, Fetcher, Resolver, retry_after_seconds, task_host_cap
from pipeline.sample_web.dns_server import DnsServer
from tests.test_download import cfg_for, shard_metadata, write_input


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (20, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


JPEG = _jpeg()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: an idle pooled connection counts as open

    def log_message(self, *a):
        pass

    def setup(self):
        super().setup()
        srv = self.server
        with srv.lock:
            srv.open += 1
            srv.most_open = max(srv.most_open, srv.open)
            srv.connections += 1

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.lock:
                self.server.open -= 1

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.hits[self.path] = srv.hits.get(self.path, 0) + 1
            n = srv.hits[self.path]
        status, headers, body = srv.route(self.path, n)
        self.send_response(status)
        for k, v in {"Content-Type": "image/jpeg" if status == 200 else "text/plain", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with srv.lock:
            srv.log.append((time.monotonic(), self.path, status))


def _image(path, n):
    return 200, {}, JPEG


class Host:
    """One web host on its own loopback address; ``route(path, n-th hit of path)`` → (status, headers, body)."""

    def __init__(self, ip: str, route=_image):
        self.srv = srv = ThreadingHTTPServer((ip, 0), _Handler)
        srv.daemon_threads = True
        srv.route, srv.lock, srv.hits, srv.log = route, threading.Lock(), {}, []
        srv.open = srv.most_open = srv.connections = 0
        self.ip, self.port = ip, srv.server_address[1]
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, path: str, name: str | None = None) -> str:
        return f"http://{name or self.ip}:{self.port}{path}"

    def __getattr__(self, name):
        return getattr(self.srv, name)

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def hosts():
    made: list[Host] = []

    def make(ip: str, route=_image) -> Host:
        made.append(Host(ip, route))
        return made[-1]

    yield make
    for h in made:
        h.close()


class Silent:
    """A host that accepts connections and never answers (a hung server); counts connections."""

    def __init__(self, ip: str):
        self.sock = socket.socket()
        self.sock.bind((ip, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.ip, self.accepted, self.held = ip, 0, []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.held.append(conn)

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def outcomes(fetcher: Fetcher, urls: list[str], threads: int = 8) -> dict[str, str]:
    got = {url: r.reason or "ok" for url, r in fetcher.fetch_all(urls, threads=threads)}
    assert len(got) == len(urls)
    return got


def from_config(**kw) -> Fetcher:
    """A download fetcher; consent (robots.txt, tdmrep.json) off unless asked: these tests count requests."""
    return Fetcher.from_config(DownloadConfig(**{"consent": False, **kw}))


# --- DNS ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resolver", ["dns_servers", "system"])
def test_tarpit_names_do_not_starve_good_urls(hosts, monkeypatch, resolver):
    """The reproduced defect: 40 URLs on names whose DNS never answers, then 3 on a name that resolves at
    once and 1 on an IP literal; `--timeout 5`, default threads and retries: every good URL is fetched."""
    good, literal = hosts("127.0.0.2"), hosts("127.0.0.3")
    tarpits = [f"t{i}.tarpit.test" for i in range(40)]
    urls = [f"http://{name}:{good.port}/t.jpg" for name in tarpits]
    urls += [good.url(f"/g{i}.jpg", "good.test") for i in range(3)] + [literal.url("/l.jpg")]
    kw = dict(timeout_s=5, allow_hosts=["good.test", "127.0.0.3"])
    if resolver == "dns_servers":
        dns = DnsServer({"good.test": ["127.0.0.2"]}, tarpit=tarpits).start()
        kw["dns_servers"] = [dns.address]
    else:  # the system resolver, as a C library sees a tarpit: it gives up after a while
        real = socket.getaddrinfo

        def getaddrinfo(host, port, *a, **k):
            if host in tarpits:
                time.sleep(6)
                raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
            if host == "good.test":
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port))]
            return real(host, port, *a, **k)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        got = outcomes(from_config(**kw), urls, threads=DownloadConfig().threads)
    finally:
        if resolver == "dns_servers":
            dns.stop()
    assert [got[u] for u in urls[40:]] == ["ok"] * 4
    assert {got[u] for u in urls[:40]} <= {"timeout", "connection_error", "host_unreachable"}
    assert sum(good.hits.values()) == 3 and literal.hits == {"/l.jpg": 1}


def test_tarpit_names_do_not_starve_good_urls_in_the_download_stage(hosts, spark, tmp_path):
    """The same defect through the real stage: one shard (one Spark task) of 40 URLs on names whose DNS
    never answers, then 3 on a name that resolves and 1 on an IP literal; default threads and retries."""
    good, literal = hosts("127.0.0.70"), hosts("127.0.0.71")
    tarpits = [f"t{i}.stage-tarpit.test" for i in range(40)]
    urls = [f"http://{name}:{good.port}/t{i}.jpg" for i, name in enumerate(tarpits)]
    urls += [good.url(f"/g{i}.jpg", "good.test") for i in range(3)] + [literal.url("/l.jpg")]
    src = write_input(tmp_path / "in", [{"url": u, "text": f"caption {i}"} for i, u in enumerate(urls)])
    defaults = DownloadConfig()
    with DnsServer({"good.test": ["127.0.0.70"]}, tarpit=tarpits) as dns:
        cfg = cfg_for(tmp_path, ["good.test", "127.0.0.71"], dns_servers=[dns.address], timeout_s=5, consent=False,
                      shard_size=len(urls), threads=defaults.threads, retries=defaults.retries)
        run_download(cfg, spark, input=str(src))
        asked = set(dns.queries)
    rows = {r["url"]: r for r in shard_metadata(tmp_path / "shards")}
    assert len(rows) == len(urls)
    assert [rows[u]["status"] for u in urls[40:]] == ["success"] * 4
    # Each tarpit name was asked and its DNS never answered: the lookup ran out of the request's time
    # (the host's later attempts hit the negative cache, and its circuit opens only after the last one).
    assert set(tarpits) <= asked
    assert [(rows[u]["status"], rows[u]["error_message"]) for u in urls[:40]] == [("failed", "timeout")] * 40
    assert sum(good.hits.values()) == 3 and literal.hits == {"/l.jpg": 1}


def test_several_addresses_all_vetted_and_the_next_one_tried(hosts):
    second = hosts("127.0.0.12")
    with DnsServer({"multi.test": ["127.0.0.11", "127.0.0.12"], "mixed.test": ["93.184.216.34", "127.0.0.12"]}) as dns:
        f = from_config(dns_servers=[dns.address], allow_hosts=["multi.test"], timeout_s=5, retries=0)
        # 127.0.0.11 has no server on that port (refused): the next vetted address serves it
        assert f.fetch(second.url("/a.jpg", "multi.test")).ok
        # one public and one loopback address: refused, and nothing reaches the loopback server
        r = from_config(dns_servers=[dns.address], timeout_s=5).fetch(second.url("/b.jpg", "mixed.test"))
        assert r.reason == "blocked_address" and "/b.jpg" not in second.hits


def test_dns_rebinding_connects_to_the_checked_address(hosts):
    target = hosts("127.0.0.13")
    # First answer: a public address (unreachable here); any later one: the loopback server.
    answer = {"rebind.test": lambda n: ["93.184.216.34"] if n <= 2 else ["127.0.0.13"]}  # A and AAAA = 2 queries
    with DnsServer(answer) as dns:
        r = from_config(dns_servers=[dns.address], timeout_s=1.5, retries=0).fetch(target.url("/r.jpg", "rebind.test"))
    assert not r.ok and r.reason in ("timeout", "connection_error")
    assert target.connections == 0


def test_failed_names_are_cached_for_a_while_and_literals_skip_dns(hosts):
    host = hosts("127.0.0.14")
    with DnsServer({}, tarpit={"tar.test"}) as dns:
        f = from_config(dns_servers=[dns.address], timeout_s=2, retries=0, host_failure_limit=0,
                        allow_hosts=["127.0.0.14"])
        got = outcomes(f, [f"http://nx.test/{i}.jpg" for i in range(10)] + [f"http://tar.test/{i}.jpg" for i in range(10)])
        assert {got[f"http://nx.test/{i}.jpg"] for i in range(10)} == {"connection_error"}
        assert {got[f"http://tar.test/{i}.jpg"] for i in range(10)} == {"timeout"}
        assert dns.queries["nx.test"] == 1  # one NXDOMAIN, then the negative cache
        assert dns.queries["tar.test"] < 10  # one lookup (its own retries), joined, then the negative cache
        assert f.fetch(host.url("/lit.jpg")).ok
        assert set(dns.queries) == {"nx.test", "tar.test"}  # the IP literal asked no one
        f0 = from_config(dns_servers=[dns.address], timeout_s=2, retries=0, dns_negative_ttl_s=0)
        f0.fetch("http://nx2.test/a.jpg")
        f0.fetch("http://nx2.test/b.jpg")
        assert dns.queries["nx2.test"] == 2  # no negative caching: asked again


def test_resolver_joins_a_lookup_under_way():
    calls, release = [], threading.Event()

    class Slow(Resolver):
        def _query(self, host, port):
            calls.append(host)
            release.wait(10)
            return ["127.0.0.15"]

    r = Slow()
    out = []
    ts = [threading.Thread(target=lambda: out.append(r.resolve("same.test", 80, 10))) for _ in range(5)]
    for t in ts:
        t.start()
    with pytest.raises(TimeoutError):
        r.resolve("same.test", 80, 0.05)  # a waiter's own deadline bounds its wait
    release.set()
    for t in ts:
        t.join()
    assert calls == ["same.test"] and out == [["127.0.0.15"]] * 5


def test_dns_servers_option_is_validated():
    with pytest.raises(ValueError, match="cannot be given by name"):
        DownloadConfig(dns_servers=["dns.example.com"])
    assert DownloadConfig(dns_servers=["127.0.0.1:5353", "[::1]:53", "9.9.9.9"]).dns_servers


# --- per-host politeness --------------------------------------------------------------------------


def test_host_cap_as_seen_by_the_server_and_threads_serve_other_hosts(hosts):
    """Host A answers nothing (but its first URL) until host B has served all its URLs: with A's URLs
    first in the input, only a scheduler that gives the threads beyond A's cap to B finishes (else A's
    URLs would wait out the server's 20 s and fail)."""
    b_done = threading.Event()

    def slow_a(path, n):
        return (200, {}, JPEG) if path == "/warm.jpg" or b_done.wait(20) else (503, {}, b"")

    def b(path, n):
        if len(b_host.hits) == 20:
            b_done.set()
        return 200, {}, JPEG

    a_host, b_host = hosts("127.0.0.20", slow_a), hosts("127.0.0.21", b)
    # /warm.jpg first: a host gets its full cap once it has answered (one request at a time before)
    urls = [a_host.url("/warm.jpg")] + [a_host.url(f"/a{i}.jpg") for i in range(20)]
    urls += [b_host.url(f"/b{i}.jpg") for i in range(20)]
    f = Fetcher(timeout_s=30, retries=0, host_connections=2, allow_hosts=("127.0.0.20", "127.0.0.21"))
    got = outcomes(f, urls, threads=8)
    assert set(got.values()) == {"ok"}
    assert a_host.most_open == 2 and b_host.most_open <= 2  # open connections, idle keep-alive ones included


def test_job_wide_cap_is_shared_by_the_tasks(hosts):
    host = hosts("127.0.0.22", lambda path, n: (time.sleep(0.05), (200, {}, JPEG))[1])
    assert (task_host_cap(2, None, None), task_host_cap(2, 4, 2), task_host_cap(2, 2, 2), task_host_cap(2, 3, 8)) == (2, 2, 1, 1)
    kw = dict(job_host_connections=2, concurrent_tasks=2, allow_hosts=["127.0.0.22"], timeout_s=20)
    tasks = [from_config(**kw) for _ in range(2)]
    assert [t.host_connections for t in tasks] == [1, 1]
    results = []
    runs = [threading.Thread(target=lambda t=t, k=k: results.append(outcomes(t, [host.url(f"/{k}/{i}.jpg") for i in range(15)])))
            for k, t in enumerate(tasks)]
    for r in runs:
        r.start()
    for r in runs:
        r.join()
    assert all(set(r.values()) == {"ok"} for r in results) and len(results) == 2
    assert host.most_open <= 2


def test_minimum_interval_between_requests_to_a_host(hosts):
    host = hosts("127.0.0.23")
    f = Fetcher(timeout_s=20, retries=0, host_min_interval_s=0.3, allow_hosts=("127.0.0.23",))
    assert set(outcomes(f, [host.url(f"/{i}.jpg") for i in range(5)]).values()) == {"ok"}
    times = sorted(t for t, _, _ in host.log)
    assert times[-1] - times[0] >= 4 * 0.3 / 2  # without the interval: a few milliseconds


def test_minimum_interval_holds_from_one_fetch_all_to_the_next(hosts):
    """The crawler fetches a task's URLs part by part with one fetcher: a host's pace carries over."""
    host = hosts("127.0.0.29")
    f = Fetcher(timeout_s=20, retries=0, host_min_interval_s=1.0, allow_hosts=("127.0.0.29",))
    assert outcomes(f, [host.url("/a.jpg")]) == {host.url("/a.jpg"): "ok"}
    assert outcomes(f, [host.url("/b.jpg")]) == {host.url("/b.jpg"): "ok"}
    (first, *_), (second, *_) = sorted(host.log)
    assert second - first >= 0.5  # without the shared clock: a few milliseconds


# --- 429 / 503 with Retry-After -------------------------------------------------------------------


def test_retry_after_is_honoured_for_the_whole_host(hosts):
    host = hosts("127.0.0.30", lambda path, n: (429, {"Retry-After": "1"}, b"slow down") if n == 1 else (200, {}, JPEG))
    f = Fetcher(timeout_s=10, retries=1, host_connections=1, allow_hosts=("127.0.0.30",))
    results = dict(f.fetch_all([host.url(f"/{i}.jpg") for i in range(3)], threads=4))
    assert all(r.ok and r.attempts == 2 for r in results.values())
    assert host.connections == 1  # the 429s' bodies were read: the connection was kept, not reopened
    log = sorted(host.log)
    for (t429, _, status), (t_next, _, _) in zip(log, log[1:]):
        if status == 429:
            assert t_next - t429 >= 0.9  # nothing reached the host before its Retry-After passed


def test_503_with_retry_after_and_http_date(hosts):
    when = "Wed, 21 Oct 2015 07:28:00 GMT"  # in the past: retry at once
    host = hosts("127.0.0.31", lambda path, n: (503, {"Retry-After": "1" if "s" in path else when}, b"")
                 if n == 1 else (200, {}, JPEG))
    f = Fetcher(timeout_s=10, retries=0, allow_hosts=("127.0.0.31",))
    assert f.fetch(host.url("/s.jpg")).ok and f.fetch(host.url("/d.jpg")).ok  # retries=0: the wait is not a retry
    assert retry_after_seconds("120") == 120 and retry_after_seconds(when) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_rate_limit_beyond_the_budget_fails_fast(hosts):
    host = hosts("127.0.0.32", lambda path, n: (429, {"Retry-After": "3600"}, b""))
    f = Fetcher(timeout_s=2, retries=1, host_connections=2, allow_hosts=("127.0.0.32",))
    got = outcomes(f, [host.url(f"/{i}.jpg") for i in range(10)])
    assert set(got.values()) == {"rate_limited"}
    assert sum(host.hits.values()) <= 2  # the first answers (one per connection) said it all
    forever = hosts("127.0.0.33", lambda path, n: (429, {"Retry-After": "1"}, b""))
    r = Fetcher(timeout_s=1, retries=1, allow_hosts=("127.0.0.33",)).fetch(forever.url("/x.jpg"))
    assert r.reason == "rate_limited" and r.attempts >= 2  # waited, asked again, then out of budget
    assert {"rate_limited", "host_unreachable"} <= set(REASONS) and {"rate_limited", "host_unreachable"} <= TRANSIENT


# --- the circuit breaker --------------------------------------------------------------------------


def test_circuit_breaker_fails_a_dead_hosts_urls_fast(hosts):
    hung = Silent("127.0.0.40")
    refused = socket.socket()
    refused.bind(("127.0.0.41", 0))  # bound, not listening: connections are refused
    healthy = hosts("127.0.0.42", lambda path, n: (404, {}, b"") if "missing" in path else (200, {}, JPEG))
    try:
        f = Fetcher(timeout_s=1, retries=0, host_connections=2, host_failure_limit=3,
                    allow_hosts=("127.0.0.40", "127.0.0.41", "127.0.0.42"))
        dead = [f"http://127.0.0.40:{hung.port}/{i}.jpg" for i in range(5)]
        gone = [f"http://127.0.0.41:{refused.getsockname()[1]}/{i}.jpg" for i in range(30)]
        fine = [healthy.url(f"/missing{i}.jpg") for i in range(10)] + [healthy.url("/ok.jpg")]
        got = outcomes(f, dead + gone + fine, threads=8)
    finally:
        hung.close()
        refused.close()
    # A host that accepts connections and then says nothing was reached: each URL is its own timeout.
    assert [got[u] for u in dead] == ["timeout"] * 5 and hung.accepted == 5
    gone_reasons = [got[u] for u in gone]
    assert gone_reasons.count("host_unreachable") >= 30 - (3 + 1)  # the limit, plus the cap's other request
    assert set(gone_reasons) == {"connection_error", "host_unreachable"}
    assert [got[u] for u in fine] == ["http_404"] * 10 + ["ok"]  # answers, even 404s, never open the circuit


def test_slow_urls_on_a_reachable_host_are_timeouts_not_a_dead_host(hosts):
    def route(path, n):
        if path.startswith("/hang"):
            time.sleep(3)  # the request was read; the answer never comes in time
        return 200, {}, JPEG

    site = hosts("127.0.0.43", route)
    f = Fetcher(timeout_s=1, retries=0, host_connections=1, host_failure_limit=3, allow_hosts=("127.0.0.43",))
    hanging = [site.url(f"/hang{i}.jpg") for i in range(4)]
    fine = [site.url(f"/{i}.jpg") for i in range(5)]
    got = outcomes(f, hanging + fine, threads=2)
    assert [got[u] for u in hanging] == ["timeout"] * 4
    assert [got[u] for u in fine] == ["ok"] * 5  # the circuit stayed closed: each was asked
    assert all(site.hits.get(f"/{i}.jpg") == 1 for i in range(5))


# --- robots.txt under the scheduler ---------------------------------------------------------------


def test_robots_txt_once_per_host_and_the_address_judged_first(hosts):
    site = hosts("127.0.0.50", lambda path, n: (200, {}, b"User-agent: *\nDisallow: /private/\n")
                 if path == "/robots.txt" else (200, {}, JPEG))
    evil = hosts("127.0.0.51")
    with DnsServer({"site.test": ["127.0.0.50"], "evil.test": ["127.0.0.51"]}) as dns:
        f = from_config(dns_servers=[dns.address], consent=True, allow_hosts=["site.test"], timeout_s=10)
        urls = [site.url(f"/{i}.jpg", "site.test") for i in range(20)] + [site.url("/private/p.jpg", "site.test")]
        got = outcomes(f, urls, threads=8)
        assert [got[u] for u in urls] == ["ok"] * 20 + ["robots_disallowed"]
        assert site.hits["/robots.txt"] == 1 and site.hits["/.well-known/tdmrep.json"] == 1
        # A name that resolves to a forbidden address is an attack on that address, not a robots.txt matter.
        assert f.fetch(evil.url("/x.jpg", "evil.test")).reason == "blocked_address"
        assert evil.connections == 0


def test_unreachable_robots_txt_disallows_the_site_for_a_while_without_asking_again(hosts):
    site = hosts("127.0.0.52", lambda path, n: (500, {}, b"") if path == "/robots.txt" and n == 1 else (200, {}, JPEG))
    f = Fetcher(timeout_s=10, retries=2, respect_robots_txt=True, robots_unavailable_s=0.5, allow_hosts=("127.0.0.52",))
    urls = [site.url(f"/{i}.jpg") for i in range(5)]
    assert set(outcomes(f, urls).values()) == {"robots_unavailable"}  # transient, and no page was asked
    assert site.hits == {"/robots.txt": 1}
    time.sleep(0.6)  # remembered for robots_unavailable_s, then asked again
    assert f.fetch(site.url("/b.jpg")).ok and site.hits["/robots.txt"] == 2


# --- the scheduler's contract ---------------------------------------------------------------------


def test_fetch_all_processes_in_threads_and_stops_cleanly(hosts):
    host = hosts("127.0.0.60")
    f = Fetcher(timeout_s=10, allow_hosts=("127.0.0.60",))
    urls = [host.url(f"/{i}.jpg") for i in range(20)]
    got = dict(f.fetch_all(urls, threads=4, process=lambda url, r: (threading.current_thread().name, len(r.data))))
    assert set(got) == set(urls) and {n for _, n in got.values()} == {len(JPEG)}
    assert all(name.startswith("fetch-worker-") for name, _ in got.values())

    def boom(url, r):
        raise RuntimeError("writer broke")

    with pytest.raises(RuntimeError, match="writer broke"):
        list(f.fetch_all(urls, threads=4, process=boom))
    it = f.fetch_all(urls, threads=4)
    next(it)
    it.close()  # the consumer stops early: the threads finish and leave
    assert not [t for t in threading.enumerate() if t.name.startswith("fetch-worker-")]


# --- the scheduler on its own: any fetch callable ------------------------------------------------


def test_the_scheduler_runs_any_fetch_callable_and_counts_only_unreached_hosts():
    """HostScheduler knows nothing of the Fetcher: here it runs a plain function. A host that cannot be
    reached opens its circuit after the limit; one that is reached but slow never does."""
    from pipeline.fetch import FetchResult, HostScheduler, Politeness

    asked: list[str] = []

    def fetch(url: str) -> FetchResult:
        asked.append(url)
        if "//down/" in url:
            return FetchResult(url, reason="connection_error", connected=False)
        if "//slow/" in url:
            return FetchResult(url, reason="timeout", connected=True)
        return FetchResult(url, data=b"x", http_status=200, connected=True)

    urls = [f"http://down/{i}" for i in range(10)] + [f"http://slow/{i}" for i in range(10)] + ["http://ok/1"]
    scheduler = HostScheduler(fetch, Politeness(connections=1, failure_limit=3, retries=0))
    scheduler.load(urls, lambda u: u)
    got = {url: r.reason or "ok" for url, r in scheduler.run(threads=4, process=None)}
    assert [got[u] for u in urls[:10]] == ["connection_error"] * 3 + ["host_unreachable"] * 7
    assert [got[u] for u in urls[10:20]] == ["timeout"] * 10 and got["http://ok/1"] == "ok"
    assert sum(u.startswith("http://down/") for u in asked) == 3  # the circuit's URLs cost no attempt


def test_each_host_keeps_its_own_interval():
    """Politeness.interval per host: a Crawl-delay raises one host's interval (capped), not the others'."""
    from pipeline.fetch import Politeness

    pace = Politeness(min_interval_s=0.5, max_crawl_delay_s=10, connections=4,
                      delay_of=lambda host: {"slow.test": 3.0, "huge.test": 3600.0}.get(host, 0.0))
    assert [pace.interval(h) for h in ("fast.test", "slow.test", "huge.test")] == [0.5, 3.0, 10.0]
    assert [pace.cap(h) for h in ("fast.test", "slow.test")] == [4, 1]
    pace.last_start["slow.test"] = 100.0
    pace.paused_until["fast.test"] = 120.0  # a Retry-After
    assert pace.next_start("slow.test") == 103.0 and pace.next_start("fast.test") == 120.0
    assert pace.next_start("new.test") == 0.0


def test_adaptive_politeness_spaces_a_slow_host_by_its_response_time():
    """delay_factor (Heritrix's): a host's interval is at least the factor × its average response time,
    capped at max_crawl_delay_s; off (0) by default."""
    from pipeline.fetch import FetchResult, HostScheduler, Politeness

    pace = Politeness(min_interval_s=0.5, max_crawl_delay_s=10, delay_factor=5)
    pace.answered("a.test", 0.4)
    assert pace.interval("a.test") == 2.0 and pace.interval("b.test") == 0.5
    pace.answered("a.test", 0.0)  # a moving average: 0.7 × 0.4
    assert abs(pace.interval("a.test") - 1.4) < 1e-9
    pace.answered("a.test", 60.0)
    assert pace.interval("a.test") == 10.0  # capped like a Crawl-delay
    off = Politeness(min_interval_s=0.5)
    off.answered("a.test", 3.0)
    assert off.interval("a.test") == 0.5 and off.response_s == {"a.test": 3.0}  # kept for the host order only

    starts: list[float] = []

    def fetch(url: str) -> FetchResult:  # the host takes at least 0.1 s to answer
        starts.append(time.monotonic())
        time.sleep(0.1)
        return FetchResult(url, data=b"x", http_status=200, connected=True)

    scheduler = HostScheduler(fetch, Politeness(connections=4, delay_factor=3, max_crawl_delay_s=10))
    scheduler.load([f"http://slow.test/{i}" for i in range(4)], lambda u: u)
    assert len(list(scheduler.run(threads=4, process=None))) == 4
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.29, gaps  # ≥ 3 × 0.1 s: every answer took at least 0.1 s (a lower bound, whatever the load)
