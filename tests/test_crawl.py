"""`wit crawl` against the real sample web server on 127.0.0.1: scope, robots.txt, traps, the WARC that
`wit extract` reads, and resume after an interrupted round."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import REPO, served_sample_web
from warcio.archiveiterator import ArchiveIterator

from pipeline.config import load_config
from pipeline.crawl import (
    CRAWL_REASONS,
    Crawler,
    Scope,
    normalise,
    read_seeds,
    registered_domain,
    run_crawl,
    warc_files,
)
from pipeline.errors import UserError
from pipeline.fetch import REASONS, FetchError

MAX_DEPTH = 3
PER_HOST = 40


def crawl_config(out: Path, port: int, **over):
    return load_config(overrides={
        "output_dir": str(out), "download.allow_hosts": [f"127.0.0.1:{port}"], "download.timeout_s": 3.0,
        "crawl.min_interval_s": 0.0, "crawl.max_crawl_delay_s": 0.0, "crawl.max_depth": MAX_DEPTH,
        "crawl.max_pages_per_host": PER_HOST, "crawl.part_pages": 7, **over})


@pytest.fixture(scope="module")
def web(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("crawl")
    with served_sample_web(root, n_pairs=60, seed=0, crawl_delay=1) as (sample, server):
        cfg = crawl_config(root, server.port)
        stats = run_crawl(cfg, spark, input=[server.url + "/"])
        yield {"root": root, "sample": sample, "server": server, "cfg": cfg, "stats": stats,
               "out": Path(cfg.path("crawl")), "hits": dict(server.hits), "spark": spark}


def records(paths) -> list[tuple[str, str, bytes]]:
    """(type, target URI, HTTP payload) of every request/response record."""
    out = []
    for p in paths:
        with open(p, "rb") as f:
            for rec in ArchiveIterator(f):
                if rec.rec_type in ("request", "response"):
                    out.append((rec.rec_type, rec.rec_headers.get_header("WARC-Target-URI"), rec.content_stream().read()))
    return out


def index(out: Path) -> pa.Table:
    return ds.dataset(str(out / "index"), format="parquet").to_table()


def test_reaches_every_page_in_scope_and_none_out(web):
    server, sample = web["server"], web["sample"]
    urls = index(web["out"]).column("url").to_pylist()
    pages = {f"{server.url}/pages/{p.name}" for p in (sample / "site/pages").glob("*.html")}
    assert pages <= set(urls)
    assert len(urls) == len(set(urls))  # every page stored once
    assert all(u.startswith(server.url + "/") for u in urls)  # no other host (example.com is linked)
    assert all("sid=" not in u for u in urls)  # session ids are stripped, so no page twice
    drops = web["stats"]["drops"]
    assert set(drops) <= set(REASONS) | set(CRAWL_REASONS)  # the fixed vocabulary
    assert drops["out_of_scope"] >= 1 and drops["not_html"] == 1 and drops["http_404"] >= 1
    assert web["stats"]["output_rows"] == len(urls)


def test_honours_robots_txt(web):
    hits = web["hits"]
    assert hits["/robots.txt"] == 1 and hits["/.well-known/tdmrep.json"] == 1  # once per job: the robots table
    assert not any(p.startswith(("/private/", "/cgi-bin/")) for p in hits)  # disallowed: never asked
    assert web["stats"]["drops"]["robots_disallowed"] == 2


def test_traps_stay_bounded(web):
    hits, stats = web["hits"], web["stats"]
    calendar = [p for p in hits if p.startswith("/calendar/")]
    assert 0 < len(calendar) <= 2 ** MAX_DEPTH  # next and previous month per level, cut at max_depth
    pages = {p: n for p, n in hits.items() if p not in ("/robots.txt", "/.well-known/tdmrep.json")}
    assert sum(pages.values()) <= PER_HOST
    assert max(pages.values()) == 1  # no page fetched twice
    assert stats["drops"]["max_depth"] > 0 and stats["drops"]["budget_exhausted"] > 0
    assert stats["input_rows"] <= PER_HOST and stats["extra"]["rounds"] == MAX_DEPTH + 1


def test_warc_records_and_index(web):
    out = web["out"]
    table = index(out)
    for row in table.to_pylist()[:10]:  # the index points at the response record
        with open(out / "warc" / row["file"], "rb") as f:
            f.seek(row["offset"])
            rec = next(iter(ArchiveIterator(io.BytesIO(f.read(row["length"])))))
        assert rec.rec_type == "response" and rec.rec_headers.get_header("WARC-Target-URI") == row["url"]
        assert row["status"] == 200 and row["mime"] == "text/html"
    kinds = Counter()
    for p in warc_files(str(out)):
        with open(p, "rb") as f:
            kinds.update(rec.rec_type for rec in ArchiveIterator(f))
    assert kinds["request"] == kinds["response"] == kinds["metadata"] == table.num_rows
    assert kinds["warcinfo"] == len(warc_files(str(out)))
    for r in range(MAX_DEPTH + 1):  # every part but a round's last holds exactly crawl.part_pages URLs
        sizes = [pq.read_metadata(p).num_rows for p in sorted((out / "pages").glob(f"round-{r:05d}-part-*"))]
        assert sizes and all(n == 7 for n in sizes[:-1]) and 0 < sizes[-1] <= 7


def test_extract_reads_the_crawl_like_the_sample_crawl(web, spark):
    from pipeline.extract import run_extract

    cfg, root = web["cfg"], web["root"]

    def pairs(inputs, name):
        run_extract(cfg, spark, input=inputs, output=str(root / name))
        t = ds.dataset(str(root / name), format="parquet").to_table(columns=["url", "text"])
        return set(zip(t.column("url").to_pylist(), t.column("text").to_pylist()))

    ours = pairs(warc_files(str(web["out"])), "candidates_crawl")
    assert ours and ours == pairs([str(web["sample"] / "crawl.warc.gz")], "candidates_sample")


def _interrupt_round(out: Path, r: int) -> None:
    """Leave ``out`` as a kill during round r leaves it: later rounds absent, one part's WARC written
    but not marked complete, a temporary file of another attempt, no _SUCCESS."""
    name = f"round-{r:05d}"
    for kind in ("frontier", "rejected", "warc", "index", "pages", "rounds"):
        for f in (out / kind).iterdir():
            n = int(f.name[6:11])
            if n > r or (kind == "rounds" and n == r):
                shutil.rmtree(f) if f.is_dir() else f.unlink()
    next(iter((out / "pages").glob(f"{name}-part-*-00001.parquet"))).unlink()
    (out / "warc" / f"{name}-part-00000-00002.warc.gz.tmp-deadbeef").write_bytes(b"half a record")
    (out / "_SUCCESS").unlink()


def test_rerun_after_interrupted_round_gives_the_same_records(web, tmp_path):
    out = tmp_path / "crawl"
    shutil.copytree(web["out"], out)
    _interrupt_round(out, 1)
    kept = next(iter((out / "warc").glob("round-00001-part-*-00000.warc.gz")))
    before = kept.stat().st_mtime_ns
    stats = run_crawl(web["cfg"], web["spark"], input=[web["server"].url + "/"], output=str(out))
    assert kept.stat().st_mtime_ns == before  # complete parts are not fetched again
    assert not list(out.rglob("*.tmp-*"))
    want, got = records(warc_files(str(web["out"]))), records(warc_files(str(out)))
    assert Counter((t, u) for t, u, _ in got) == Counter((t, u) for t, u, _ in want)  # no duplicates, none missing
    def pages(recs):  # the sample's pages (trap pages hold a new random session id each time)
        return {(u, b) for t, u, b in recs if t == "response" and "/pages/" in u}

    assert pages(got) == pages(want)
    assert stats["output_rows"] == web["stats"]["output_rows"] and stats["drops"] == web["stats"]["drops"]
    assert run_crawl(web["cfg"], web["spark"], input=["ignored"], output=str(out))["output_rows"] == stats["output_rows"]  # complete: skipped


def test_kill_9_mid_round_then_rerun(web, tmp_path):
    """A real SIGKILL while a round's parts are being written, then a rerun: the same pages, once each."""
    server = web["server"]
    out = tmp_path / "crawl"
    args = [sys.executable, "-m", "pipeline.cli", "crawl", f"{server.url}/", "--output", str(out),
            "--set", f"output_dir={tmp_path}", "--set", f"download.allow_hosts=['127.0.0.1:{server.port}']",
            "--set", "crawl.min_interval_s=0.2", "--set", "crawl.max_crawl_delay_s=0",
            "--set", f"crawl.max_depth={MAX_DEPTH}", "--set", f"crawl.max_pages_per_host={PER_HOST}",
            "--set", "crawl.part_pages=7"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not list((out / "pages").glob("round-00001-part-*-00000.parquet")):  # kill once round 1 is under way
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the job: driver, JVM and Python workers at once
        proc.wait()
    assert not (out / "_SUCCESS").exists()
    cfg = crawl_config(tmp_path, server.port)
    run_crawl(cfg, web["spark"], input=[server.url + "/"], output=str(out))
    want, got = records(warc_files(str(web["out"]))), records(warc_files(str(out)))
    assert Counter((t, u) for t, u, _ in got) == Counter((t, u) for t, u, _ in want)


def test_sitemaps_from_robots_txt(web, tmp_path):
    """With crawl.sitemaps, a seed's robots.txt Sitemap (an index, then a page list) gives every page at depth 0."""
    server, sample = web["server"], web["sample"]
    cfg = crawl_config(tmp_path, server.port, **{"crawl.sitemaps": True, "crawl.max_depth": 0})
    stats = run_crawl(cfg, web["spark"], input=[server.url + "/"], output=str(tmp_path / "crawl"))
    urls = set(index(tmp_path / "crawl").column("url").to_pylist())
    assert urls == {server.url + "/"} | {f"{server.url}/pages/{p.name}" for p in (sample / "site/pages").glob("*.html")}
    assert stats["extra"]["rounds"] == 1 and stats["drops"]["max_depth"] > 0
    rejected = ds.dataset(tmp_path / "crawl/rejected/round-00000", format="parquet").to_table().to_pylist()
    assert rejected == [{"url": "https://example.com/elsewhere.html", "depth": 0, "reason": "out_of_scope"}]


def test_total_page_budget(web, tmp_path):
    """crawl.max_pages bounds the URLs queued over all rounds; the rest of the links are budget_exhausted."""
    server = web["server"]
    cfg = crawl_config(tmp_path, server.port, **{"crawl.max_pages": 12})
    stats = run_crawl(cfg, web["spark"], input=[server.url + "/"], output=str(tmp_path / "crawl"))
    assert stats["input_rows"] == sum(stats["extra"]["frontier_sizes"]) == 12
    assert stats["drops"]["budget_exhausted"] > 0 and 0 < stats["output_rows"] <= 12
    rejected = ds.dataset(tmp_path / "crawl/rejected", format="parquet").to_table().column("url").to_pylist()
    frontier = ds.dataset(tmp_path / "crawl/frontier", format="parquet").to_table().column("url").to_pylist()
    assert len(set(rejected)) == len(rejected) and not set(rejected) & set(frontier)  # each URL once, one fate


def test_hosts_of_different_intervals_are_crawled_together(web, tmp_path):
    """A host with a Crawl-delay (the sample) and one without (a plain server on 127.0.0.2) are two
    scheduler groups fetched at the same time; both are crawled whole. Each host is in one fetch task
    per round. A redirect (the plain server's /sub → /sub/) is not followed in the fetch: its target is
    queued at the same depth (/only → /only/), and a page that is also linked directly is stored once."""
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "only").mkdir()
    (site / "index.html").write_text('<!DOCTYPE html><html><body><a href="a.html">a</a> <a href="sub">sub</a> '
                                     '<a href="sub/">sub/</a> <a href="only">only</a></body></html>')
    (site / "a.html").write_text('<!DOCTYPE html><html><body><a href="sub">sub</a></body></html>')
    (site / "sub/index.html").write_text("<!DOCTYPE html><html><body><p>sub</p></body></html>")
    (site / "only/index.html").write_text("<!DOCTYPE html><html><body><p>only via a redirect</p></body></html>")
    asked: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(site), **kwargs)

        def log_message(self, fmt, *args):
            asked.append(self.path)

    plain = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    try:
        server, other = web["server"], f"http://127.0.0.2:{plain.server_address[1]}"
        cfg = crawl_config(tmp_path, server.port, **{
            "crawl.max_crawl_delay_s": 0.05, "crawl.max_depth": 1, "crawl.tasks": 4,
            "download.allow_hosts": [f"127.0.0.1:{server.port}", f"127.0.0.2:{plain.server_address[1]}"]})
        crawler = Crawler(cfg)
        try:
            for url in (server.url + "/", other + "/"):
                crawler.fetcher.robots.check(url)
            pace = crawler.fetcher.politeness
            assert pace.interval("127.0.0.1") == 0.05 and pace.interval("127.0.0.2") == 0.0
            assert pace.cap("127.0.0.1") == 1 and pace.cap("127.0.0.2") == cfg.download.host_connections
        finally:
            crawler.close()
        stats = run_crawl(cfg, web["spark"], input=[server.url + "/", other + "/"], output=str(tmp_path / "crawl"))
    finally:
        plain.shutdown()
        plain.server_close()
    urls = index(tmp_path / "crawl").column("url").to_pylist()
    assert {other + "/", other + "/a.html", server.url + "/", server.url + "/pages/0000000.html"} <= set(urls)
    assert urls.count(other + "/sub/") == 1 and other + "/sub" not in urls and asked.count("/sub/") == 1
    assert other + "/only/" in urls  # a redirect of a depth-1 page: its target keeps depth 1, in round 2
    assert stats["drops"]["redirected"] == 2 and stats["extra"]["rounds"] == 3
    for r in range(stats["extra"]["rounds"]):
        t = ds.dataset(tmp_path / f"crawl/frontier/round-{r:05d}", format="parquet").to_table()
        groups = {}
        for host, group in zip(t.column("host").to_pylist(), t.column("group").to_pylist()):
            assert groups.setdefault(host, group) == group and 0 <= group < 4


def test_crawl_delay_raises_the_host_interval(web):
    cfg = crawl_config(web["root"], web["server"].port, **{"crawl.max_crawl_delay_s": 0.5})
    crawler = Crawler(cfg)
    try:
        url = web["server"].url + "/pages/0000000.html"
        crawler.fetcher.robots.check(url)
        with pytest.raises(FetchError, match="robots_disallowed"):
            crawler.fetcher.robots.check(web["server"].url + "/private/x.html")
        assert crawler.fetcher.politeness.interval("127.0.0.1") == 0.5  # robots.txt asks 1 s, capped at max_crawl_delay_s
    finally:
        crawler.close()


def test_urls_scope_and_seeds(tmp_path):
    assert normalise("HTTP://Example.COM:80/a?sid=1&b=2#frag", ["sid"]) == "http://example.com/a?b=2"
    assert normalise("https://example.com") == "https://example.com/"
    for bad in ("mailto:x@example.com", "javascript:void(0)", "ftp://example.com/", "http://u:p@example.com/"):
        assert normalise(bad) is None
    assert registered_domain("a.b.example.co.uk") == "example.co.uk" and registered_domain("x.example.com") == "example.com"
    # the Public Suffix List: private suffixes are sites of their own, deep ICANN suffixes are known
    assert registered_domain("alice.github.io") == "alice.github.io" != registered_domain("bob.github.io")
    assert registered_domain("www.city.kawasaki.jp") == "city.kawasaki.jp"
    assert registered_domain("a.b.example.com.au") == "example.com.au"
    assert registered_domain("127.0.0.1") == "127.0.0.1" and registered_domain("localhost") == "localhost"
    cfg = load_config(overrides={"crawl.scope": "same_domain", "crawl.exclude": [r"/tag/"]})
    scope = Scope(cfg.crawl, {"www.example.com"})
    assert "http://blog.example.com/a" in scope and "http://other.org/" not in scope
    assert "http://www.example.com/tag/x" not in scope
    with pytest.raises(UserError, match="bad regex"):
        Scope(load_config(overrides={"crawl.include": ["("]}).crawl, set())
    (tmp_path / "seeds.txt").write_text("# seeds\nhttp://a.example/\n\nhttp://b.example/\n")
    (tmp_path / "seeds.csv").write_text("url,n\nhttp://c.example/,1\n")
    pq.write_table(pa.table({"url": ["http://d.example/"]}), tmp_path / "seeds.parquet")
    got = read_seeds([str(tmp_path / n) for n in ("seeds.txt", "seeds.csv", "seeds.parquet")] + ["http://e.example/"], "url")
    assert got == [f"http://{c}.example/" for c in "abcde"]
    with pytest.raises(UserError, match="neither a URL nor a file"):
        read_seeds([str(tmp_path / "missing.txt")], "url")
    with pytest.raises(UserError, match="no seeds"):
        run_crawl(load_config(overrides={"output_dir": str(tmp_path)}))


def _round_files(out: Path, r: int) -> tuple[list, list]:
    """Round r's frontier (url, depth, host, group) and rejected (url, depth, reason) rows, sorted."""
    def rows(kind, cols):
        folder = out / kind / f"round-{r:05d}"
        if not folder.exists():
            return []
        return sorted(tuple(d.values()) for d in ds.dataset(folder, format="parquet").to_table(columns=cols).to_pylist())
    return rows("frontier", ["url", "depth", "host", "group"]), rows("rejected", ["url", "depth", "reason"])


def _rounds(cfg, out: Path, spark):
    from pipeline.crawl import Rounds
    from pipeline.stage import StageContext
    from pipeline.stats import StageStats

    return Rounds(StageContext("crawl", cfg, None, str(out), str(out), False, StageStats("crawl"), _spark=spark))


def _synthetic_round(out: Path) -> None:
    """Round 0 of two seeds, with every case the next frontier decides: duplicates at two depths, session
    ids and fragments, a redirect, links out of scope, past max_depth, over the per-host budget, no web
    page, null, non-ASCII, already queued and already rejected."""
    from pipeline.crawl import FRONTIER, PAGES, REJECTED

    a, b = "http://a.test", "http://b.test"
    for folder in ("frontier/round-00000", "rejected/round-00000", "pages"):
        (out / folder).mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"url": f"{a}/", "depth": 0, "host": "a.test", "group": 0},
                                         {"url": f"{b}/deep", "depth": 0, "host": "b.test", "group": 1}], schema=FRONTIER),
                   out / "frontier/round-00000/part-0.parquet")
    pq.write_table(pa.Table.from_pylist([{"url": f"{a}/old-rejected", "depth": 0, "reason": "not_html"}], schema=REJECTED),
                   out / "rejected/round-00000/part-0.parquet")
    links_a = [f"{a}/p{i}" for i in range(30)] + [f"{a}/p1#top", f"{a}/p2?sid=9", f"{b}/x", "http://c.test/out",
                                                  "mailto:x@a.test", None, f"{a}/caf\u00e9", f"{a}/", f"{a}/old-rejected"]
    pages = [{"url": f"{a}/", "depth": 0, "reason": None, "links": links_a},
             {"url": f"{a}/moved", "depth": 0, "reason": "redirected", "links": [f"{a}/target", f"{a}/p3"]},
             {"url": f"{b}/deep", "depth": 2, "reason": None, "links": [f"{b}/deeper", f"{b}/x"]},
             {"url": f"{b}/gone", "depth": 0, "reason": "http_404", "links": None}]
    pq.write_table(pa.Table.from_pylist(pages, schema=PAGES), out / "pages/round-00000-part-00000-00000.parquet")


@pytest.mark.parametrize("max_pages", [1000, 20])
def test_next_frontier_on_the_driver_is_the_spark_jobs(tmp_path, spark, max_pages):
    """A small round's next frontier is computed on the driver; the Spark job (above
    crawl.driver_frontier_max_urls) decides every URL the same way and puts each host in the same group."""
    got = {}
    for name, limit in (("spark", 0), ("driver", 10**6)):
        out = tmp_path / name
        _synthetic_round(out)
        cfg = load_config(overrides={"output_dir": str(tmp_path), "crawl.max_depth": 2, "crawl.max_pages_per_host": 25,
                                     "crawl.max_pages": max_pages, "crawl.tasks": 3,
                                     "crawl.driver_frontier_max_urls": limit})
        _rounds(cfg, out, spark).next_frontier(0, Scope(cfg.crawl, {"a.test", "b.test"}))
        got[name] = _round_files(out, 1)
    frontier, rejected = got["driver"]
    assert got["spark"] == got["driver"]
    reasons = Counter(r for _, _, r in rejected)
    assert reasons["out_of_scope"] == 1 and reasons["max_depth"] == 1 and reasons["budget_exhausted"] > 0
    depth = {u: d for u, d, *_ in frontier}
    assert depth["http://a.test/target"] == 0  # a redirect's target: its page's depth, first in the host's budget
    assert not depth.keys() & {"http://a.test/", "http://a.test/old-rejected"} and len(frontier) + 2 <= max_pages
    for f in (tmp_path / "driver/frontier/round-00001").glob("*.parquet"):  # one group a file, by URL
        t = pq.read_table(f)
        assert len(set(t.column("group").to_pylist())) == 1 and t.column("url").to_pylist() == sorted(t.column("url").to_pylist())


def test_the_crawls_frontiers_on_the_driver_are_the_spark_jobs(web, tmp_path):
    """Every round of the crawl above (its frontiers computed on the driver) recomputed by the Spark job."""
    out = tmp_path / "crawl"
    shutil.copytree(web["out"], out)
    cfg = web["cfg"].model_copy(update={"crawl": web["cfg"].crawl.model_copy(update={"driver_frontier_max_urls": 0})})
    rounds = _rounds(cfg, out, web["spark"])
    scope = Scope(cfg.crawl, {"127.0.0.1"})
    for r in range(web["stats"]["extra"]["rounds"]):
        want = _round_files(out, r + 1)
        for kind in ("frontier", "rejected"):
            shutil.rmtree(out / kind / f"round-{r + 1:05d}", ignore_errors=True)
        rounds.next_frontier(r, scope)
        assert _round_files(out, r + 1) == want, f"round {r + 1}"
