"""Page fetch: one fetch task's pages through the safe fetcher, into WARC parts.

``Crawler`` is one task's ``pipeline.fetch.Fetcher``, set up with public settings only: HTML asked
for (``accept``), a 2xx that is not HTML refused before its body is read (``check_response`` →
``not_html``), no redirect followed (a 3xx ends as ``redirected``, its target queued like a link:
scope, robots.txt and the seen-URL check apply, so no page is stored twice), consent always on:
robots.txt, the AI-training opt-outs before the request (robots.txt AI groups, tdmrep.json) and after
it (tdm-reservation, X-Robots-Tag), and a page's own metas (``opted_out_meta`` / ``opted_out_tdmrep``:
the page is not stored, its links are still followed).
Its one host scheduler paces every host of the task at its own interval (``crawl.min_interval_s``,
raised by the host's Crawl-delay up to ``crawl.max_crawl_delay_s``, and with ``crawl.delay_factor`` by
the host's response time) and keeps that pace from one
part to the next. ``crawl_group`` is the Spark task: a host group of a round, part by part.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from urllib.parse import urljoin

import requests

from pipeline import log
from pipeline.crawl.layout import INDEX, PAGES, CrawlFiles, move, round_name, temporary, write_table
from pipeline.crawl.scope import origin_of
from pipeline.crawl.warc import ACCEPT, WarcPart
from pipeline.fetch import Fetcher, FetchError, FetchResult
from pipeline.fetch.consent import html_metas, page_opt_out

HTML_TYPES = ("text/html", "application/xhtml+xml")
_HTML_SNIFF = re.compile(rb"^\s*(<!--.*?-->\s*)*<\s*(!doctype\s+html|html|head|body)\b", re.I | re.S)
_LOC = re.compile(rb"<loc>\s*([^<]*?)\s*</loc>", re.I)
MAX_SITEMAPS = 50


def is_html_type(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() in HTML_TYPES


def html_only(resp: requests.Response) -> None:
    """The fetcher's ``check_response``: a 2xx that says it is not HTML fails before its body is read."""
    ctype = resp.headers.get("Content-Type", "")
    if ctype and not is_html_type(ctype):
        raise FetchError("not_html", ctype)


def _sniffed(row: dict, result: FetchResult) -> FetchResult:
    """A page without Content-Type is kept when its first bytes look like HTML (in the fetch thread)."""
    if result.ok and not _content_type(result) and not _HTML_SNIFF.match(result.data[:1024]):
        result.reason, result.detail, result.data = "not_html", "no Content-Type, not HTML", None
    return result


def _content_type(result: FetchResult) -> str:
    return dict((k.lower(), v) for k, v in result.headers or ()).get("content-type", "")


def user_agent(cfg) -> str:
    cc, dl = cfg.crawl, cfg.download
    ua = cc.user_agent or dl.user_agent
    contact = cc.contact_url or dl.contact_url
    return ua + (f" (+{contact})" if contact and contact not in ua else "")


class Crawler:
    """One task's page fetcher (see the module docstring) and the sitemaps its robots.txt names."""

    def __init__(self, cfg):
        self.cfg, self.cc = cfg, cfg.crawl
        self.fetcher = Fetcher.from_config(
            cfg.download, cfg.robots, max_bytes=self.cc.max_bytes, user_agent=user_agent(cfg), follow_redirects=False,
            respect_robots_txt=True, tdmrep=True,  # consent always on for the crawl
            opt_out_directives=frozenset(cfg.download.disallowed_header_directives), host_connections=cfg.download.host_connections,
            host_min_interval_s=self.cc.min_interval_s, max_crawl_delay_s=self.cc.max_crawl_delay_s,
            delay_factor=self.cc.delay_factor, accept=ACCEPT,
            check_response=html_only)

    def fetch(self, rows: list[dict]) -> Iterator[tuple[dict, FetchResult]]:
        """(row, outcome) of the rows' URLs as they finish, host by host."""
        return self.fetcher.fetch_all(rows, url_of=lambda r: r["url"], threads=self.cc.threads, process=_sniffed)

    def sitemap_urls(self, seeds: list[str]) -> Iterator[str]:
        """The page URLs listed by the sitemaps that the seeds' robots.txt names (a sitemap index is
        followed one level; at most MAX_SITEMAPS sitemaps per origin)."""
        for origin in dict.fromkeys(origin_of(u) for u in seeds):
            todo, done = list(self.fetcher.robots.sitemaps(origin)), 0
            while todo and done < MAX_SITEMAPS:
                url, done = todo.pop(0), done + 1
                result = self.fetcher.read_side_file(url, self.cc.max_bytes)
                if not result.ok:
                    log.warn(f"crawl: sitemap {url}: {result.reason}")
                    continue
                index, locs = parse_sitemap(result.data, self.cc.max_bytes)
                if index:
                    todo += locs
                else:
                    yield from locs

    def close(self) -> None:
        self.fetcher.close()


def parse_sitemap(data: bytes, max_bytes: int) -> tuple[bool, list[str]]:
    """(is a sitemap index, its <loc> URLs) of a sitemap (XML, gzipped or not). A regex rather than an
    XML parser: no entity expansion, and a broken sitemap still gives its well-formed entries."""
    if data[:2] == b"\x1f\x8b":
        import zlib

        data = zlib.decompressobj(31).decompress(data, max_bytes)
    locs = [html.unescape(m.group(1).decode("utf-8", "replace")) for m in _LOC.finditer(data)]
    return b"<sitemapindex" in data[:4096].lower(), locs


def page_links(body: bytes, content_type: str, base_url: str) -> list[str]:
    """The absolute targets of the page's ``<a href>`` (``<base href>`` honoured, rel=nofollow skipped)."""
    from selectolax.lexbor import LexborHTMLParser

    from pipeline.extract.warc import decode_page

    tree = LexborHTMLParser(decode_page(body, content_type))
    base = base_url
    base_el = tree.css_first("base[href]")
    if base_el is not None and base_el.attributes.get("href"):
        base = urljoin(base_url, base_el.attributes["href"].strip())
    out = []
    for a in tree.css("a[href]"):
        href = (a.attributes.get("href") or "").strip()
        if not href or "nofollow" in (a.attributes.get("rel") or "").lower():
            continue
        try:
            out.append(urljoin(base, href))
        except ValueError:
            continue
    return out


# --- the fetch task ----------------------------------------------------------------------------------


def outcome(row: dict, result: FetchResult, warc: WarcPart, ua: str = "", ai_tokens: tuple[str, ...] = ()) -> dict:
    """A frontier URL's row in pages/: its reason (None: stored in the WARC) and the links to follow
    (a redirect's one link is its target)."""
    url, depth = row["url"], row["depth"]
    out = {"url": url, "depth": depth, "reason": result.reason, "links": None}
    if result.reason == "redirected":
        out["links"] = [result.detail]
    if not result.ok:
        return out
    out["links"] = page_links(result.data, _content_type(result), url)
    # the page's own opt-out (robots / AI-token / tdm-reservation metas): not stored, its links still followed
    out["reason"] = page_opt_out(html_metas(result.data), None, ua, url, tokens=ai_tokens)
    if out["reason"] is None:
        warc.add(result, depth)
    return out


def crawl_part(files: CrawlFiles, cfg, r: int, g: int, c: int, rows: list[dict], crawler: Crawler) -> None:
    """Fetch one part's pages into its WARC, index and pages files (each written under a temporary
    name and renamed, the pages file last: it marks the part complete)."""
    t0 = time.perf_counter()
    warc_path, index_path, pages_path = (files.path(k, r, g, c) for k in ("warc", "index", "pages"))
    warc_tmp = temporary(warc_path)
    warc = WarcPart(warc_tmp, warc_path.rsplit("/", 1)[-1], user_agent(cfg), cfg.output_dir)
    outcomes = []
    try:
        for row, result in crawler.fetch(rows):
            outcomes.append(outcome(row, result, warc, crawler.fetcher.user_agent, crawler.fetcher.ai_tokens))
    finally:
        warc.close()
    write_table(warc.index, INDEX, index_path)
    move(warc_tmp, warc_path)
    outcomes.sort(key=lambda o: o["url"])
    write_table(outcomes, PAGES, pages_path)  # last: marks the part complete
    stored = sum(o["reason"] is None for o in outcomes)
    log.info(f"crawl: {round_name(r, g, c)}: {stored}/{len(rows)} pages stored in {time.perf_counter() - t0:.1f}s")


def crawl_group(task: tuple) -> None:
    """A Spark task: fetch group g of round r (every URL of its hosts), part by part, skipping the
    complete parts. A host is in one group, so its politeness holds for the whole job."""
    from pipeline import storage
    from pipeline.config import RunConfig

    cfg_json, out, r, g, table = task
    cfg = RunConfig.model_validate_json(cfg_json)
    storage.configure(cfg.storage)
    files = CrawlFiles(out)
    crawler = Crawler(cfg)
    crawler.fetcher.robots.preload(table.value)  # the round's origins, asked once for the job
    try:
        for c, rows in enumerate(files.group_chunks(r, g, cfg.crawl.part_pages)):
            if not files.exists("pages", r, g, c):  # complete: a rerun never fetches it again
                crawl_part(files, cfg, r, g, c, rows, crawler)
    finally:
        crawler.close()
