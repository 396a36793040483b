"""The order in which HostScheduler asks the hosts: new hosts first in input order, then the host with
the most time's work left, so a slow host's URLs are not left for the end of a task."""

from __future__ import annotations

import time

from pipeline.fetch import FetchResult, HostScheduler, Politeness


def test_a_slow_hosts_urls_go_first_once_every_host_was_asked():
    """One thread, one connection per host: every host is asked once in input order, then the slow host
    (0.5 s an answer, 4 URLs left: 2 s of work) before the fast hosts' second URLs while it has a whole
    second of work left, although its URLs come last in the input (in input order they would be asked
    last, a tail of their own)."""
    asked: list[str] = []

    def fetch(url: str) -> FetchResult:
        asked.append(url)
        if url.startswith("http://slow.test/"):
            time.sleep(0.5)
        return FetchResult(url, data=b"x", http_status=200, connected=True)

    fast = [f"http://f{h}.test/{i}" for i in range(3) for h in range(6)]
    urls = ["http://slow.test/0", *fast, *(f"http://slow.test/{i}" for i in range(1, 5))]
    scheduler = HostScheduler(fetch, Politeness(connections=1, retries=0))
    scheduler.load(urls, lambda u: u)
    got = {url: r.reason or "ok" for url, r in scheduler.run(threads=1, process=None)}
    assert set(got.values()) == {"ok"} and len(got) == len(urls)
    assert asked[:7] == ["http://slow.test/0"] + [f"http://f{h}.test/0" for h in range(6)]
    assert asked[7:10] == ["http://slow.test/1", "http://slow.test/2", "http://slow.test/3"]


def test_a_host_that_asks_for_pauses_counts_them_as_its_work():
    """A rate-limited host (a 429 with Retry-After 1 s to its first request) is paced by its pause, not by
    its quick answers: after the pause its URLs (1 s of pause per answer so far, 7 URLs left) go before
    the fast hosts' (0.2 s an answer) last ones while that is a whole second of work or more, although
    they come last in the input."""
    asked: list[str] = []
    limited = {"n": 0}

    def fetch(url: str) -> FetchResult:
        asked.append(url)
        if url.startswith("http://limited.test/"):
            limited["n"] += 1
            if limited["n"] == 1:
                return FetchResult(url, reason="rate_limited", http_status=429, connected=True, retry_after=1.0)
        else:
            time.sleep(0.2)
        return FetchResult(url, data=b"x", http_status=200, connected=True)

    fast = [f"http://f{h}.test/{i}" for i in range(4) for h in range(4)]
    urls = ["http://limited.test/0", *fast, *(f"http://limited.test/{i}" for i in range(1, 8))]
    scheduler = HostScheduler(fetch, Politeness(connections=1, retries=0, backoff_s=0.01, budget_s=30))
    scheduler.load(urls, lambda u: u)
    got = {url: r.reason or "ok" for url, r in scheduler.run(threads=1, process=None)}
    assert set(got.values()) == {"ok"}
    second_round = asked[5:]  # after the first URL of each of the 5 hosts
    # the limited host's retry and its other URLs come before any fast host's last URL
    last_fast = max(second_round.index(u) for u in fast if u.endswith("/3"))
    assert all(second_round.index(f"http://limited.test/{i}") < last_fast for i in range(1, 4))


def test_hosts_not_asked_yet_go_first_those_with_the_most_urls_first():
    """Before anything is known of a host, its URL count is its work: the first asks go to the hosts with
    the most URLs (input order among equals), each host once, before any host's second URL."""
    asked: list[str] = []

    def fetch(url: str) -> FetchResult:
        asked.append(url)
        return FetchResult(url, data=b"x", http_status=200, connected=True)

    urls = ["http://a.test/0", "http://b.test/0", "http://c.test/0", "http://b.test/1", "http://d.test/0",
            "http://c.test/1", "http://b.test/2"]
    scheduler = HostScheduler(fetch, Politeness(connections=1, retries=0))
    scheduler.load(urls, lambda u: u)
    assert len(list(scheduler.run(threads=1, process=None))) == len(urls)
    assert asked[:4] == ["http://b.test/0", "http://c.test/0", "http://a.test/0", "http://d.test/0"]


def test_a_host_with_many_urls_is_probed_at_its_cap_as_soon_as_it_answers():
    """A rate limit shows only under load: once every host was asked, a host with PROBE_URLS URLs or more
    (last in the input) gets its next `cap` requests before any other host's second URL, then input order
    again; a host with fewer URLs keeps input order."""
    from pipeline.fetch.hosts import PROBE_URLS

    asked: list[str] = []

    def fetch(url: str) -> FetchResult:
        asked.append(url)
        return FetchResult(url, data=b"x", http_status=200, connected=True)

    others = [f"http://f{h}.test/{i}" for i in range(3) for h in range(4)]
    urls = [*others, *(f"http://many.test/{i}" for i in range(PROBE_URLS + 4)), "http://few.test/0", "http://few.test/1"]
    scheduler = HostScheduler(fetch, Politeness(connections=3, retries=0))
    scheduler.load(urls, lambda u: u)
    assert len(list(scheduler.run(threads=1, process=None))) == len(urls)
    first_asks = ["http://many.test/0"] + [f"http://f{h}.test/0" for h in range(4)] + ["http://few.test/0"]
    assert asked[:6] == first_asks  # every host once, the most URLs first
    assert asked[6:9] == [f"http://many.test/{i}" for i in range(1, 4)]  # the probe: its cap's worth at once
    assert asked.index("http://f0.test/1") < asked.index(f"http://many.test/{PROBE_URLS + 3}")  # then input order
    assert asked.index("http://few.test/1") > asked.index("http://f0.test/1")
