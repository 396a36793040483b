"""The safe fetcher and the URL-safety rules, against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import io
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest
from PIL import Image

from filters.url_safety import UrlSafetyFilter, check_url, host_allowed, is_blocked_ip
from pipeline.fetch import Fetcher
from pipeline.fetch.consent import header_opt_out
from pipeline.fetch.robots_rules import product_token


def _jpeg(w=64, h=48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


JPEG = _jpeg()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so pooled connections are exercised

    def log_message(self, *a):
        pass

    def _send(self, status=200, body=JPEG, headers=None, ctype="image/jpeg"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            for one in v if isinstance(v, list) else [v]:
                self.send_header(k, one)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: C901 - one route per behaviour under test
        srv = self.server
        path = self.path
        with srv.lock:
            srv.hits[path] = srv.hits.get(path, 0) + 1
            n = srv.hits[path]
        srv.user_agents.append(self.headers.get("User-Agent"))
        if path == "/img.jpg":
            self._send()
        elif path == "/flaky":
            self._send(503, b"busy", ctype="text/plain") if n == 1 else self._send()
        elif path == "/always500":
            self._send(500, b"no", ctype="text/plain")
        elif path == "/404":
            self._send(404, b"no", ctype="text/plain")
        elif path == "/403":
            self._send(403, b"no", ctype="text/plain")
        elif path.startswith("/redirect/"):
            k = int(path.rsplit("/", 1)[1])
            self.send_response(302)
            self.send_header("Location", f"/redirect/{k - 1}" if k > 0 else "/img.jpg")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/to-bad-location":
            self.send_response(302)
            self.send_header("Location", "http://[not-an-address/x")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/to-file":
            self.send_response(301)
            self.send_header("Location", "file:///etc/passwd")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/to-metadata":
            self.send_response(307)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/stall-headers":
            srv.stop.wait(30)
        elif path == "/drip-headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(60):
                self.wfile.write(b"X-Pad: 1\r\n")
                self.wfile.flush()
                if srv.stop.wait(0.3):
                    break
        elif path == "/drip-body":
            self.send_response(200)
            self.send_header("Content-Length", str(len(JPEG)))
            self.end_headers()
            for i in range(len(JPEG)):
                self.wfile.write(JPEG[i:i + 1])
                self.wfile.flush()
                if srv.stop.wait(0.2):
                    break
        elif path == "/big-declared":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            self.wfile.write(b"\0" * 1000)
        elif path == "/big-stream":
            self.send_response(200)
            self.end_headers()
            self.close_connection = True
            try:
                for _ in range(2000):
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass
        elif path == "/robots.txt":
            self._send(200, b"User-agent: *\nDisallow: /private/\n", ctype="text/plain")
        elif path.startswith("/private/"):
            self._send()
        elif path.startswith("/xrt/"):
            value = {"noai": "noai", "noimageindex": "noimageindex, nofollow", "other": "otherbot: noai",
                     "ours": "wit-builder: noimageai", "fine": "noarchive", "multi": ["noarchive", "noai"]}[path[5:]]
            self._send(headers={"X-Robots-Tag": value})
        else:
            self._send(404, b"", ctype="text/plain")


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.hits, srv.user_agents, srv.lock, srv.stop = {}, [], threading.Lock(), threading.Event()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    srv.allow = (f"127.0.0.1:{srv.server_address[1]}",)
    yield srv
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


def fetcher(server, **kw) -> Fetcher:
    kw.setdefault("timeout_s", 3.0)
    kw.setdefault("retries", 0)
    kw.setdefault("backoff_s", 0.05)
    kw.setdefault("allow_hosts", server.allow)
    return Fetcher(**kw)


# --- url_safety ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url,reason", [
    ("https://upload.wikimedia.org/a.jpg", None),
    ("http://93.184.216.34/x.png", None),
    ("file:///etc/passwd", "blocked_scheme"),
    ("data:image/png;base64,AAAA", "blocked_scheme"),
    ("ftp://example.com/a.jpg", "blocked_scheme"),
    ("javascript:alert(1)", "blocked_scheme"),
    ("http://127.0.0.1/a.jpg", "blocked_address"),
    ("http://127.1/a.jpg", "blocked_address"),
    ("http://2130706433/a.jpg", "blocked_address"),
    ("http://0x7f000001/a.jpg", "blocked_address"),
    ("http://0177.0.0.1/a.jpg", "blocked_address"),
    ("http://localhost:8080/a.jpg", "blocked_address"),
    ("http://foo.localhost/a.jpg", "blocked_address"),
    ("http://10.1.2.3/a.jpg", "blocked_address"),
    ("http://172.16.0.1/a.jpg", "blocked_address"),
    ("http://192.168.1.1/a.jpg", "blocked_address"),
    ("http://100.64.0.1/a.jpg", "blocked_address"),
    ("http://169.254.169.254/latest/meta-data/", "blocked_address"),
    ("http://0.0.0.0/a.jpg", "blocked_address"),
    ("http://224.0.0.1/a.jpg", "blocked_address"),
    ("http://240.0.0.1/a.jpg", "blocked_address"),
    ("http://[::1]/a.jpg", "blocked_address"),
    ("http://[::]/a.jpg", "blocked_address"),
    ("http://[fe80::1]/a.jpg", "blocked_address"),
    ("http://[fc00::1]/a.jpg", "blocked_address"),
    ("http://[ff02::1]/a.jpg", "blocked_address"),
    ("http://[::ffff:10.0.0.1]/a.jpg", "blocked_address"),
    ("http://[2002:c0a8:101::]/a.jpg", "blocked_address"),
    ("http://[2606:4700::1111]/a.jpg", None),
    ("http://user:pw@example.com/a.jpg", "userinfo"),
    ("http:///a.jpg", "bad_url"),
    ("http://exa mple.com/a.jpg", "bad_url"),
    ("http://example.com:99999/a.jpg", "bad_url"),
    ("", "bad_url"),
    ("http://example.com/" + "a" * 3000, "url_too_long"),
])
def test_check_url(url, reason):
    assert check_url(url) == reason


def test_allow_hosts_by_host_or_host_port():
    assert check_url("http://127.0.0.1:8765/a.jpg", allow_hosts=["127.0.0.1:8765"]) is None
    assert check_url("http://127.0.0.1:8766/a.jpg", allow_hosts=["127.0.0.1:8765"]) == "blocked_address"
    assert check_url("http://127.0.0.1:8766/a.jpg", allow_hosts=["127.0.0.1"]) is None
    assert host_allowed("[::1]", 80, ["[::1]:80"]) and not host_allowed("::1", 81, ["[::1]:80"])


def test_allow_list_index_answers_like_the_whole_list():
    from pipeline.fetch import AllowList

    entries = ["127.0.0.1:8765", "Example.COM", "[::1]:80", "::1", "h.test:81", "[fe80::1]", "a.b.test", " x.test "]
    index = AllowList(entries)
    for host in ["127.0.0.1", "example.com", "EXAMPLE.com", "::1", "[::1]", "h.test", "fe80::1", "[fe80::1]",
                 "a.b.test", "b.test", "x.test", "other"]:
        for port in (80, 81, 8765, None):
            assert host_allowed(host, port, index.for_host(host)) == host_allowed(host, port, entries), (host, port)


def test_is_blocked_ip():
    assert not is_blocked_ip("8.8.8.8") and not is_blocked_ip("2001:4860:4860::8888")
    for ip in ("127.0.0.1", "10.0.0.1", "::1", "fe80::1%eth0", "::ffff:127.0.0.1", "64:ff9b::a00:1", "garbage"):
        assert is_blocked_ip(ip), ip


def test_url_safety_filter_keeps_safe_rows():
    batch = pa.record_batch({"url": ["http://example.com/a.jpg", "file:///etc/passwd", "http://10.0.0.1/x",
                                     "http://127.0.0.1:8765/a.jpg"]})
    f = UrlSafetyFilter(allow_hosts=["127.0.0.1:8765"])
    assert f.name == "url_safety"
    assert f.apply(batch).keep.tolist() == [True, False, False, True]
    assert f.reasons(batch) == [None, "blocked_scheme", "blocked_address", None]


# --- fetcher ------------------------------------------------------------------------------------


def test_fetches_image_with_user_agent_and_contact(server):
    f = fetcher(server, user_agent="wit-builder/0.1 (+https://example.org/contact)")
    r = f.fetch(server.url + "/img.jpg")
    assert r.ok and r.data == JPEG and r.http_status == 200
    assert server.user_agents[-1] == "wit-builder/0.1 (+https://example.org/contact)"
    assert f.ua_token == "wit-builder"


def test_loopback_refused_without_allow(server):
    r = Fetcher(timeout_s=2).fetch(server.url + "/img.jpg")
    assert r.reason == "blocked_address" and r.data is None


def test_hostname_resolving_to_loopback_is_refused(server, monkeypatch):
    # "localhost" is refused by name; any other name that resolves to loopback is refused after DNS.
    port = server.server_address[1]
    assert Fetcher(timeout_s=2).fetch(f"http://localhost:{port}/img.jpg").reason == "blocked_address"
    assert fetcher(server, allow_hosts=(f"localhost:{port}",)).fetch(f"http://localhost:{port}/img.jpg").ok
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **kw: real("127.0.0.1" if host == "loop.test" else host, *a, **kw))
    n = server.hits.get("/img.jpg", 0)
    assert Fetcher(timeout_s=2).fetch(f"http://loop.test:{port}/img.jpg").reason == "blocked_address"
    assert server.hits.get("/img.jpg", 0) == n
    assert fetcher(server, allow_hosts=("loop.test",)).fetch(f"http://loop.test:{port}/img.jpg").ok


def fake_dns(monkeypatch, host: str, answer) -> list[str]:
    """Make ``host`` resolve to ``answer(n)`` (a list of IPs; n = lookups so far); returns the lookup log."""
    real, calls = socket.getaddrinfo, []

    def getaddrinfo(name, port, *a, **kw):
        if name != host:
            return real(name, port, *a, **kw)
        calls.append(name)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answer(len(calls))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


def test_every_resolved_address_is_checked(server, monkeypatch):
    port = server.server_address[1]
    fake_dns(monkeypatch, "mixed.test", lambda n: ["93.184.216.34", "127.0.0.1"])  # one public, one private: refused
    assert Fetcher(timeout_s=2).fetch(f"http://mixed.test:{port}/img.jpg").reason == "blocked_address"


def test_dns_rebinding_connects_to_the_checked_address(server, monkeypatch):
    """The name resolves to a public address when checked and to 127.0.0.1 afterwards: the fetcher
    must connect to what it checked (and so never reach our local server)."""
    port = server.server_address[1]
    fake_dns(monkeypatch, "rebind.test", lambda n: ["93.184.216.34" if n == 1 else "127.0.0.1"])  # first: unreachable here
    before = server.hits.get("/rebind.jpg", 0)
    r = Fetcher(timeout_s=1.5).fetch(f"http://rebind.test:{port}/rebind.jpg")
    assert not r.ok and r.reason in ("timeout", "connection_error")
    assert server.hits.get("/rebind.jpg", 0) == before


def test_dns_answers_are_cached_and_every_use_is_vetted(server, monkeypatch):
    from pipeline.fetch import Resolver

    port = server.server_address[1]
    calls = fake_dns(monkeypatch, "cached.test", lambda n: ["127.0.0.1"])
    url = f"http://cached.test:{port}/img.jpg"
    assert fetcher(server, allow_hosts=("cached.test",)).fetch(url).ok
    assert fetcher(server, allow_hosts=("cached.test",)).fetch(url).ok  # a new connection, the cached answer
    assert len(calls) == 1
    assert Fetcher(timeout_s=2).fetch(url).reason == "blocked_address"  # the cached loopback answer is checked again
    uncached = fetcher(server, allow_hosts=("cached.test",))
    uncached.resolver = Resolver(ttl_s=0.0)
    assert uncached.fetch(url).ok
    uncached.close()  # a new connection, so a new lookup
    assert uncached.fetch(url).ok
    assert len(calls) == 3  # expired answers are looked up again


def test_status_codes(server):
    f = fetcher(server)
    assert f.fetch(server.url + "/404").reason == "http_404"
    assert f.fetch(server.url + "/403").reason == "http_4xx"
    assert f.fetch(server.url + "/always500").reason == "http_5xx"


def test_retries_5xx_with_backoff(server):
    r = fetcher(server, retries=2).fetch(server.url + "/flaky")
    assert r.ok and r.attempts == 2
    n = server.hits.get("/always500", 0)
    assert fetcher(server, retries=2).fetch(server.url + "/always500").attempts == 3
    assert server.hits["/always500"] == n + 3
    n404 = server.hits.get("/404", 0)
    fetcher(server, retries=2).fetch(server.url + "/404")
    assert server.hits["/404"] == n404 + 1  # 4xx is not retried


def test_redirects_followed_rechecked_and_capped(server):
    assert fetcher(server, max_redirects=3).fetch(server.url + "/redirect/2").ok
    assert fetcher(server, max_redirects=3).fetch(server.url + "/redirect/5").reason == "too_many_redirects"
    assert fetcher(server).fetch(server.url + "/to-file").reason == "blocked_scheme"
    assert fetcher(server).fetch(server.url + "/to-metadata").reason == "blocked_address"
    assert fetcher(server).fetch(server.url + "/to-bad-location").reason == "bad_url"  # not a crash or a retry


def test_redirects_not_followed_give_their_target(server):
    """follow_redirects=False (the crawler): a 3xx ends as ``redirected``, its absolute target the detail."""
    before = server.hits.get("/redirect/1", 0)
    r = fetcher(server, follow_redirects=False).fetch(server.url + "/redirect/2#frag")
    assert r.reason == "redirected" and r.detail == server.url + "/redirect/1" and r.http_status == 302
    assert server.hits.get("/redirect/1", 0) == before  # the target is never asked
    assert fetcher(server, follow_redirects=False).fetch(server.url + "/to-bad-location").reason == "bad_url"


@pytest.mark.parametrize("path", ["/stall-headers", "/drip-headers", "/drip-body"])
def test_deadline_covers_connect_headers_and_body(server, path):
    t0 = time.monotonic()
    r = fetcher(server, timeout_s=1.0).fetch(server.url + path)
    elapsed = time.monotonic() - t0
    assert r.reason == "timeout" and r.data is None
    assert elapsed < 1.0 + 2.0  # the deadline, plus scheduling slack on a loaded machine


def test_timeouts_are_retried(server):
    n = server.hits.get("/stall-headers", 0)
    r = fetcher(server, timeout_s=0.5, retries=1).fetch(server.url + "/stall-headers")
    assert r.reason == "timeout" and r.attempts == 2 and server.hits["/stall-headers"] == n + 2


def test_byte_cap(server):
    f = fetcher(server, max_bytes=100_000)
    assert f.fetch(server.url + "/big-declared").reason == "too_large"
    t0 = time.monotonic()
    assert f.fetch(server.url + "/big-stream").reason == "too_large"
    assert time.monotonic() - t0 < 3.0


def test_x_robots_tag_opt_outs(server):
    f = fetcher(server)
    got = {k: f.fetch(f"{server.url}/xrt/{k}").reason for k in ("noai", "noimageindex", "other", "ours", "fine", "multi")}
    out = "opted_out_header"
    assert got == {"noai": out, "noimageindex": out, "other": None, "ours": out, "fine": None, "multi": out}


def test_opt_out_rule_like_img2dataset():
    d = {"noai", "noimageai", "noindex", "noimageindex"}
    def opted(*values):
        return header_opt_out([("X-Robots-Tag", v) for v in values], "wit-builder/1.0", (), d) is not None

    assert opted("noindex, nofollow")
    assert not opted("googlebot: noindex")
    assert opted("WIT-Builder: NoAI")
    assert not opted("nofollow", "noarchive")
    assert product_token("img2dataset/1.0") == "img2dataset"


def test_robots_txt_optional_and_cached(server):
    n = server.hits.get("/robots.txt", 0)
    f = fetcher(server, respect_robots_txt=True)
    assert f.fetch(server.url + "/private/a.jpg").reason == "robots_disallowed"
    assert f.fetch(server.url + "/img.jpg").ok
    assert server.hits["/robots.txt"] == n + 1
    assert fetcher(server).fetch(server.url + "/private/a.jpg").ok  # off by default


def test_keep_alive_pool_reused(server):
    f = fetcher(server)
    results = [f.fetch(server.url + "/img.jpg") for _ in range(5)]
    assert all(r.ok for r in results)
    pools = f.session().get_adapter(server.url).poolmanager.pools
    assert len(pools) == 1


def test_threads_share_a_fetcher(server):
    f = fetcher(server)
    out = []
    ts = [threading.Thread(target=lambda: out.append(f.fetch(server.url + "/img.jpg").ok)) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert out == [True] * 8
