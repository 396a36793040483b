"""The AI-training opt-outs as download and crawl apply them, against real servers on loopback
addresses: each signal its own reason, tdmrep.json asked once per origin like robots.txt, consent on by
default and one switch off; the report's first lines say when it was off."""

from __future__ import annotations

import json

from pipeline.config import DownloadConfig, RunConfig
from pipeline.fetch import Fetcher
from pipeline.report import consent_note
from tests.test_fetch_hosts import JPEG, hosts, outcomes  # noqa: F401 - hosts is the fixture

ROBOTS = b"User-agent: *\nDisallow: /private/\n\nUser-agent: GPTBot\nDisallow: /gallery/\n"
TDMREP = json.dumps([{"location": "/reserved/*", "tdm-reservation": 1}]).encode()
HEADERS = {"/tdm-header.jpg": {"tdm-reservation": "1"}, "/xrt-ccbot.jpg": {"X-Robots-Tag": "CCBot: noai"},
           "/xrt-other.jpg": {"X-Robots-Tag": "otherbot: noai"}}


def site(hosts, ip):  # noqa: F811
    def route(path, n):
        if path == "/robots.txt":
            return 200, {}, ROBOTS
        if path == "/.well-known/tdmrep.json":
            return 200, {"Content-Type": "application/json"}, TDMREP
        return 200, HEADERS.get(path, {}), JPEG

    return hosts(ip, route)


def download_fetcher(ip: str, **kw) -> Fetcher:
    return Fetcher.from_config(DownloadConfig(**{"allow_hosts": [ip], "timeout_s": 5, "retries": 0, **kw}))


EXPECTED = {"/a.jpg": "ok", "/private/p.jpg": "robots_disallowed", "/gallery/g.jpg": "opted_out_robots_ai",
            "/reserved/r.jpg": "opted_out_tdmrep", "/tdm-header.jpg": "opted_out_tdmrep",
            "/xrt-ccbot.jpg": "opted_out_header", "/xrt-other.jpg": "ok"}


def test_download_applies_each_opt_out_with_its_reason_by_default(hosts):  # noqa: F811
    s = site(hosts, "127.0.0.150")
    got = outcomes(download_fetcher("127.0.0.150"), [s.url(p) for p in EXPECTED])
    assert {p: got[s.url(p)] for p in EXPECTED} == EXPECTED
    assert s.hits["/robots.txt"] == 1 and s.hits["/.well-known/tdmrep.json"] == 1  # once per origin
    # decided before any request: the opted-out URLs were never asked
    assert "/gallery/g.jpg" not in s.hits and "/reserved/r.jpg" not in s.hits


def test_ai_tokens_can_be_left_out_and_consent_switched_off(hosts):  # noqa: F811
    s = site(hosts, "127.0.0.151")
    got = outcomes(download_fetcher("127.0.0.151", honour_ai_tokens=False), [s.url(p) for p in EXPECTED])
    assert got[s.url("/gallery/g.jpg")] == "ok" and got[s.url("/private/p.jpg")] == "robots_disallowed"
    assert got[s.url("/xrt-ccbot.jpg")] == "ok"  # scoped to an AI token we no longer honour
    off = site(hosts, "127.0.0.152")
    got = outcomes(download_fetcher("127.0.0.152", consent=False), [off.url(p) for p in EXPECTED])
    assert set(got.values()) == {"ok"}
    assert "/robots.txt" not in off.hits and "/.well-known/tdmrep.json" not in off.hits


def test_a_missing_or_broken_tdmrep_json_reserves_nothing(hosts):  # noqa: F811
    for ip, answer in (("127.0.0.153", (404, {}, b"")), ("127.0.0.154", (200, {}, b"{not json")),
                       ("127.0.0.155", (500, {}, b""))):
        s = hosts(ip, lambda path, n, answer=answer: answer if path == "/.well-known/tdmrep.json"
                  else (404, {}, b"") if path == "/robots.txt" else (200, {}, JPEG))
        got = outcomes(download_fetcher(ip), [s.url("/reserved/r.jpg"), s.url("/b.jpg")])
        assert set(got.values()) == {"ok"}, answer
        assert s.hits["/.well-known/tdmrep.json"] == 1


def test_the_report_says_first_when_consent_was_off(tmp_path):
    from pipeline.stats import StageStats

    cfg = RunConfig(output_dir=str(tmp_path))
    assert consent_note(cfg) == ""
    st = StageStats("download", input_rows=10, output_rows=7)
    st.drops.update({"opted_out_tdmrep": 2, "robots_disallowed": 1})
    st.extra = {"consent": True}
    st.write(cfg.path("shards"))
    note = consent_note(cfg)
    assert "OFF" not in note and "opted_out_tdmrep: 2" in note and "robots_disallowed: 1" in note
    st.extra = {"consent": False}
    st.write(cfg.path("shards"))
    assert "consent checks OFF" in consent_note(cfg)


def test_a_crawled_page_that_opts_out_is_not_stored_but_its_links_are_followed(tmp_path):
    from pipeline.crawl.pages import outcome
    from pipeline.crawl.warc import WarcPart
    from pipeline.fetch import FetchResult

    pages = {"meta": (b'<html><head><meta name="robots" content="noimageai"></head>'
                      b'<body><a href="/next">n</a></body></html>', "opted_out_meta"),
             "tdm": (b'<html><head><meta name="tdm-reservation" content="1"></head><body></body></html>',
                     "opted_out_tdmrep"),
             "other-bot": (b'<html><head><meta name="otherbot" content="noai"></head><body></body></html>', None)}
    warc = WarcPart(str(tmp_path / "p.warc.gz"), "p.warc.gz", "wit-builder/1.0", str(tmp_path))
    got = {}
    for name, (body, _) in pages.items():
        result = FetchResult(f"http://a.test/{name}", body, None, 200, f"http://a.test/{name}",
                             headers=[("Content-Type", "text/html")], status_line="200 OK")
        got[name] = outcome({"url": result.url, "depth": 0}, result, warc, "wit-builder/1.0", ("CCBot",))
    warc.close()
    assert {n: o["reason"] for n, o in got.items()} == {n: reason for n, (_, reason) in pages.items()}
    assert got["meta"]["links"] == ["http://a.test/next"]
    assert [row["url"] for row in warc.index] == ["http://a.test/other-bot"]  # only the page that may be used
