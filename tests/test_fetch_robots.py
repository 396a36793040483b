"""robots.txt as the fetcher fetches it (RFC 9309 §2.3): every status class, redirects, size, expiry,
Crawl-delay pacing; and IDNA-mapped host names after a redirect. Real servers on loopback addresses."""

from __future__ import annotations

import time

from pipeline.fetch import Fetcher, parse_robots
from tests.test_fetch_hosts import JPEG, hosts, outcomes  # noqa: F401 - hosts is the fixture

RULES = b"User-agent: *\nDisallow: /private/\n"


def site_with(hosts, ip: str, robots):  # noqa: F811
    """A host whose /robots.txt answers ``robots(n)`` → (status, headers, body); images elsewhere."""
    return hosts(ip, lambda path, n: robots(n) if path == "/robots.txt" else (200, {}, JPEG))


def fetcher(ip: str, **kw) -> Fetcher:
    return Fetcher(**{"timeout_s": 5, "retries": 0, "respect_robots_txt": True, "allow_hosts": (ip,), **kw})


def test_a_2xx_robots_txt_is_parsed_whatever_its_x_robots_tag(hosts):  # noqa: F811
    site = site_with(hosts, "127.0.0.80", lambda n: (200, {"X-Robots-Tag": "noindex, noai"}, RULES))
    got = outcomes(fetcher("127.0.0.80"), [site.url("/a.jpg"), site.url("/private/b.jpg")])
    assert got == {site.url("/a.jpg"): "ok", site.url("/private/b.jpg"): "robots_disallowed"}


def test_4xx_means_allow_all_and_5xx_429_mean_unavailable(hosts):  # noqa: F811
    expected = {404: "ok", 403: "ok", 410: "ok", 401: "ok", 500: "robots_unavailable", 503: "robots_unavailable",
                429: "robots_unavailable"}
    for i, (status, outcome) in enumerate(expected.items()):
        ip = f"127.0.0.{81 + i}"
        site = site_with(hosts, ip, lambda n, status=status: (status, {}, b"Disallow: /"))
        urls = [site.url(f"/{k}.jpg") for k in range(3)]
        assert set(outcomes(fetcher(ip), urls).values()) == {outcome}, status
        assert site.hits["/robots.txt"] == 1, status  # remembered for the host: not asked per page


def test_a_network_failure_means_unavailable(hosts):  # noqa: F811
    import socket

    refused = socket.socket()
    refused.bind(("127.0.0.90", 0))  # bound, not listening
    try:
        url = f"http://127.0.0.90:{refused.getsockname()[1]}/a.jpg"
        assert fetcher("127.0.0.90").fetch(url).reason == "robots_unavailable"
    finally:
        refused.close()


def test_retry_after_of_an_unavailable_robots_txt_is_honoured(hosts):  # noqa: F811
    site = site_with(hosts, "127.0.0.91", lambda n: (429, {"Retry-After": "1"}, b"") if n == 1 else (200, {}, RULES))
    f = fetcher("127.0.0.91", robots_unavailable_s=3600)
    assert f.fetch(site.url("/a.jpg")).reason == "robots_unavailable"
    assert f.fetch(site.url("/b.jpg")).reason == "robots_unavailable" and site.hits["/robots.txt"] == 1
    time.sleep(1.1)  # the Retry-After, not the hour of robots_unavailable_s
    assert f.fetch(site.url("/c.jpg")).ok and site.hits["/robots.txt"] == 2


def test_five_redirects_are_followed_to_the_robots_txt(hosts):  # noqa: F811
    def route(path, n):
        if path == "/robots.txt":
            return 301, {"Location": "/r1"}, b""
        if path.startswith("/r") and int(path[2:]) < 5:
            return 302, {"Location": f"/r{int(path[2:]) + 1}"}, b""
        if path == "/r5":
            return 200, {"Content-Type": "text/plain"}, RULES
        return 200, {}, JPEG

    site = hosts("127.0.0.92", route)
    got = outcomes(fetcher("127.0.0.92", max_redirects=1), [site.url("/a.jpg"), site.url("/private/b.jpg")])
    assert got == {site.url("/a.jpg"): "ok", site.url("/private/b.jpg"): "robots_disallowed"}


def test_a_robots_txt_over_500_kib_is_parsed_up_to_the_limit(hosts):  # noqa: F811
    body = RULES + b"# padding\n" * 80_000  # 800 KB
    site = site_with(hosts, "127.0.0.93", lambda n: (200, {}, body))
    got = outcomes(fetcher("127.0.0.93"), [site.url("/a.jpg"), site.url("/private/b.jpg")])
    assert got == {site.url("/a.jpg"): "ok", site.url("/private/b.jpg"): "robots_disallowed"}


def test_a_robots_txt_is_kept_at_most_max_age(hosts):  # noqa: F811
    site = site_with(hosts, "127.0.0.94", lambda n: (200, {}, RULES))
    f = fetcher("127.0.0.94", robots_max_age_s=0.3)
    assert f.fetch(site.url("/a.jpg")).ok and f.fetch(site.url("/b.jpg")).ok
    assert site.hits["/robots.txt"] == 1
    time.sleep(0.4)
    assert f.fetch(site.url("/c.jpg")).ok and site.hits["/robots.txt"] == 2


def test_crawl_delay_spaces_the_hosts_requests_and_other_hosts_keep_their_pace(hosts):  # noqa: F811
    slow = site_with(hosts, "127.0.0.95", lambda n: (200, {}, b"User-agent: *\nCrawl-delay: 1\n"))
    fast = site_with(hosts, "127.0.0.96", lambda n: (404, {}, b""))
    f = Fetcher(timeout_s=5, retries=0, respect_robots_txt=True, allow_hosts=("127.0.0.95", "127.0.0.96"))
    urls = [slow.url(f"/{i}.jpg") for i in range(3)] + [fast.url(f"/{i}.jpg") for i in range(4)]
    assert set(outcomes(f, urls).values()) == {"ok"}
    pages = sorted(t for t, path, _ in slow.log if path not in ("/robots.txt", "/.well-known/tdmrep.json"))
    # the first page follows robots.txt in one attempt; from then on the host is asked at its delay
    assert pages[2] - pages[1] >= 0.9 and pages[2] - pages[0] >= 1
    assert slow.most_open == 1  # a host with a Crawl-delay gets one connection


def test_parse_robots_reads_sitemaps_delay_and_a_bom():
    rules = parse_robots(b"\xef\xbb\xbfUser-agent: *\nDisallow: /x/\nCrawl-delay: 2\nSitemap: http://a.test/s.xml\n")
    assert not rules.allowed("wit-builder", "http://a.test/x/1") and rules.allowed("wit-builder", "http://a.test/y")
    assert rules.crawl_delay("wit-builder") == 2.0 and rules.sitemaps == ["http://a.test/s.xml"]


# --- IDNA-mapped names after a redirect --------------------------------------------------------------


def test_a_redirect_to_an_idna_spelling_of_loopback_is_blocked(hosts):  # noqa: F811
    targets = {"/full": "http://１２７.０.０.１:{port}/x.jpg", "/circled": "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:{port}/x.jpg",
               "/dots": "http://127。0。0。1:{port}/x.jpg"}
    # the Location header as UTF-8 bytes on the wire (http.server writes header values as Latin-1)
    site = hosts("127.0.0.97", lambda path, n: (302, {"Location": targets[path].format(port=n).encode().decode("latin-1")},
                                                b"") if path in targets else (200, {}, JPEG))
    f = Fetcher(timeout_s=5, retries=0, allow_hosts=("127.0.0.97",))
    for path in targets:
        r = f.fetch(site.url(path))
        assert r.reason == "blocked_address", (path, r.reason, r.detail)
