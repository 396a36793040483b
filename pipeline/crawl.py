"""`wit crawl`: a polite page crawler that writes WARC files `wit extract` reads unchanged.

**Rounds.** Breadth first: round ``r`` fetches the frontier of pages at depth ``r`` (the seeds are
round 0) and computes round ``r+1``'s frontier from their links. Under the output folder (crawl/):

    frontier/round-RRRRR.parquet            url, depth, host: the pages round r fetches
    rejected/round-RRRRR.parquet            url, depth, reason: links of round r-1's pages not queued
    warc/round-RRRRR-part-PPPPP.warc.gz     request, response and metadata records, gzip per record
    index/round-RRRRR-part-PPPPP.parquet    CDX-style: url, status, mime, file, offset, length
    pages/round-RRRRR-part-PPPPP.parquet    every frontier URL's outcome: reason (None: stored) and links
    rounds/round-RRRRR.json                 the round's counts; its presence marks the round complete

**Resume.** A part is the unit of work: its three files are written under temporary names and
renamed, the pages file last, which marks the part complete. A rerun skips complete rounds and
parts and redoes a part whose pages file is missing, replacing whatever WARC it had (no
duplicate records). A frontier is written whole and renamed, then the round's json.

**Where it runs.** On the driver, with ``crawl.threads`` threads, host by host through the fetcher's
HostScheduler (per-host connection cap, minimum interval, Retry-After, circuit breaker). This is
the simplest design that is polite by construction (one process sees every request to a host);
memory holds one part's pages and the URLs seen so far as 8-byte fingerprints (``Seen``); the next
frontier is computed one part at a time. Spark tasks
partitioned by host are left for when one machine's bandwidth is the limit.

**Politeness and safety.** Every fetch goes through ``pipeline.fetch.Fetcher`` (address safety,
deadlines, size caps, redirects re-checked) with robots.txt always on (RFC 9309, cached per host
for the crawl's process). A host's ``Crawl-delay`` (up to ``crawl.max_crawl_delay_s``) raises its
minimum interval above ``crawl.min_interval_s``: the part's hosts are grouped by interval and each
group is fetched with a fetcher of that interval, all groups at the same time. Only HTML pages are stored (``not_html``). With
``crawl.sitemaps`` the pages of the sitemaps named by the seeds' robots.txt are seeds too.

**Traps** (endless calendars, session ids, link farms) are bounded by URL normalisation (session-id
parameters stripped, fragments dropped), the scope rules, ``max_depth`` and the per-host and total
page budgets. Every URL not crawled has a reason in ``_stats.json`` drops, counted once per URL:
the fetcher's reasons, robots_disallowed, not_html, out_of_scope, max_depth, budget_exhausted,
duplicate (a redirect to a page already seen).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import html
import io
import ipaddress
import json
import os
import queue
import re
import threading
import time
import urllib.robotparser
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import log
from pipeline.errors import UserError
from pipeline.fetch import Fetcher, FetchError, FetchResult, RobotsCache
from pipeline.stage import StageContext, stage

# Crawl decisions, beside the fetcher's REASONS.
CRAWL_REASONS = ("robots_disallowed", "out_of_scope", "budget_exhausted", "not_html", "max_depth", "duplicate")
HTML_TYPES = ("text/html", "application/xhtml+xml")
ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"
FRONTIER = pa.schema([("url", pa.string()), ("depth", pa.int32()), ("host", pa.string())])
REJECTED = pa.schema([("url", pa.string()), ("depth", pa.int32()), ("reason", pa.string())])
INDEX = pa.schema([("url", pa.string()), ("status", pa.int32()), ("mime", pa.string()), ("file", pa.string()),
                   ("offset", pa.int64()), ("length", pa.int64())])
PAGES = pa.schema([("url", pa.string()), ("depth", pa.int32()), ("final_url", pa.string()),
                   ("reason", pa.string()), ("links", pa.list_(pa.string()))])
_HTML_SNIFF = re.compile(rb"^\s*(<!--.*?-->\s*)*<\s*(!doctype\s+html|html|head|body)\b", re.I | re.S)
# Registered domains under these second-level labels have three labels (co.uk, com.au …): enough for
# same_domain without a public suffix list.
_SECOND_LEVEL = {"co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go"}


# --- URLs and scope --------------------------------------------------------------------------------


def normalise(url: str, strip_params: Iterable[str] = ()) -> str | None:
    """The URL's canonical spelling, or None when it is not an http(s) URL with a host: scheme and
    host lower-cased, default port and fragment dropped, ``strip_params`` removed from the query."""
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").rstrip(".")
        port = parts.port
    except (ValueError, AttributeError):
        return None
    if scheme not in ("http", "https") or not host or parts.username or parts.password:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != (80 if scheme == "http" else 443):
        netloc += f":{port}"
    query = parts.query
    strip = {p.lower() for p in strip_params}
    if query and strip:
        pairs = parse_qsl(query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if k.lower() not in strip]
        if len(kept) != len(pairs):
            query = urlencode(kept)
    return urlunsplit((scheme, netloc, parts.path or "/", query, ""))


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").rstrip(".")


def registered_domain(host: str) -> str:
    """``a.b.example.co.uk`` → ``example.co.uk`` (approximate: no public suffix list); an IP is itself."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host
    except ValueError:
        pass
    labels = host.split(".")
    n = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL else 2
    return ".".join(labels[-n:])


class Scope:
    """Which URLs the crawl follows: the seeds' hosts or domains (or any), include/exclude regexes."""

    def __init__(self, cc, seed_hosts: Iterable[str]):
        self.kind = cc.scope
        self.hosts = set(seed_hosts)
        self.domains = {registered_domain(h) for h in self.hosts}
        try:
            self.include = [re.compile(p) for p in cc.include]
            self.exclude = [re.compile(p) for p in cc.exclude]
        except re.error as e:
            raise UserError(f"crawl.include/exclude: bad regex {e.pattern!r}: {e}") from None

    def __contains__(self, url: str) -> bool:
        host = host_of(url)
        if self.kind == "same_host" and host not in self.hosts:
            return False
        if self.kind == "same_domain" and registered_domain(host) not in self.domains:
            return False
        if self.include and not any(p.search(url) for p in self.include):
            return False
        return not any(p.search(url) for p in self.exclude)


def read_seeds(sources: Iterable[str], url_col: str) -> list[str]:
    """Seed URLs from URLs and files (text: one URL a line, # comments; .parquet/.csv: ``url_col``)."""
    urls: list[str] = []
    for src in sources:
        if "://" in src and not src.startswith("file://") and not os.path.exists(src):
            urls.append(src)
            continue
        path = src.removeprefix("file://")
        if not os.path.isfile(path):
            raise UserError(f"crawl seed {src!r} is neither a URL nor a file")
        if path.endswith(".parquet"):
            table = pq.read_table(path)
            if url_col not in table.column_names:
                raise UserError(f"crawl seeds {path}: no column {url_col!r} (config crawl.seed_url_col)")
            urls += [u for u in table.column(url_col).to_pylist() if u]
        elif path.endswith(".csv"):
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if url_col not in (reader.fieldnames or []):
                    raise UserError(f"crawl seeds {path}: no column {url_col!r} (config crawl.seed_url_col)")
                urls += [row[url_col] for row in reader if row[url_col]]
        else:
            with open(path, encoding="utf-8") as f:
                urls += [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    return urls


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


# --- fetching pages --------------------------------------------------------------------------------


class PageFetcher(Fetcher):
    """The safe fetcher, asking for HTML and keeping the response's status line and headers for the
    WARC; a 2xx that is not HTML fails as ``not_html`` before its body is read."""

    def session(self):
        s = super().session()
        s.headers["Accept"] = ACCEPT
        return s

    def _read(self, url, final_url, resp, att, max_bytes) -> FetchResult:
        if getattr(_any_body, "on", False):  # robots.txt or a sitemap: read as the fetcher does
            return super()._read(url, final_url, resp, att, max_bytes)
        ctype = resp.headers.get("Content-Type", "")
        if 200 <= resp.status_code < 300 and ctype and not is_html_type(ctype):
            raise FetchError("not_html", ctype)
        result = super()._read(url, final_url, resp, att, max_bytes)
        if not ctype and not _HTML_SNIFF.match(result.data[:1024]):
            raise FetchError("not_html", "no Content-Type, not HTML")
        result.headers = list(resp.raw.headers.items())
        result.status_line = f"{resp.status_code} {resp.reason or ''}".strip()
        result.protocol = "HTTP/1.0" if getattr(resp.raw, "version", 11) == 10 else "HTTP/1.1"
        return result


_any_body = threading.local()  # set while robots.txt or a sitemap (not HTML) is fetched in this thread


def is_html_type(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() in HTML_TYPES


class CrawlRobots(RobotsCache):
    """The fetcher's robots.txt cache, also keeping each origin's Crawl-delay for our user agent."""

    def __init__(self, fetcher: Fetcher):
        super().__init__(fetcher)
        self.delays: dict[str, float] = {}
        self.sitemaps: dict[str, list[str]] = {}  # the Sitemap: lines of each origin's robots.txt

    def _load(self, origin: str):
        _any_body.on = True
        try:
            got = super()._load(origin)
        finally:
            _any_body.on = False
        if isinstance(got, urllib.robotparser.RobotFileParser):
            delay = got.crawl_delay(self.fetcher.ua_token)
            if delay:
                self.delays[origin] = float(delay)
            self.sitemaps[origin] = list(got.site_maps() or [])
        return got

    def delay(self, url: str) -> float:
        parts = urlsplit(url)
        return self.delays.get(f"{parts.scheme}://{parts.netloc}".lower(), 0.0)


def user_agent(cfg) -> str:
    cc, dl = cfg.crawl, cfg.download
    ua = cc.user_agent or dl.user_agent
    contact = cc.contact_url or dl.contact_url
    return ua + (f" (+{contact})" if contact and contact not in ua else "")


def make_fetcher(cfg, interval_s: float) -> PageFetcher:
    """A page fetcher from the download settings (safety, timeouts, DNS), with the crawl's own."""
    dl, cc = cfg.download, cfg.crawl
    return PageFetcher(
        timeout_s=dl.timeout_s, max_bytes=cc.max_bytes, max_redirects=dl.max_redirects, retries=dl.retries,
        user_agent=user_agent(cfg), allow_hosts=tuple(dl.allow_hosts),
        opt_out_directives=frozenset(dl.disallowed_header_directives), respect_robots_txt=True,
        host_connections=dl.host_connections, host_min_interval_s=interval_s,
        host_failure_limit=dl.host_failure_limit, dns_servers=tuple(dl.dns_servers),
        dns_negative_ttl_s=dl.dns_negative_ttl_s)


_END = object()


def _merged(iterators: list[Iterator]) -> Iterator:
    """The items of all ``iterators``, each drained by its own thread, as they come (the host groups
    of different intervals are fetched at the same time, not one after the other)."""
    out: queue.Queue = queue.Queue(maxsize=64)
    stop = threading.Event()
    errors: list[BaseException] = []

    def pump(it: Iterator) -> None:
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        out.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            errors.append(e)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # the scheduler's threads finish their fetch and leave
            out.put(_END)

    threads = [threading.Thread(target=pump, args=(it,), name="crawl-group", daemon=True) for it in iterators]
    for t in threads:
        t.start()
    alive = len(threads)
    try:
        while alive:
            item = out.get()
            if item is _END:
                alive -= 1
            elif not errors:
                yield item
        if errors:
            raise errors[0]
    finally:
        stop.set()
        while alive:  # let the pumps see the stop and end
            if out.get() is _END:
                alive -= 1
        for t in threads:
            t.join()


class Crawler:
    """Fetches a round's parts: one robots.txt cache and one fetcher per host interval for the crawl."""

    def __init__(self, cfg):
        self.cfg, self.cc = cfg, cfg.crawl
        self.base = make_fetcher(cfg, self.cc.min_interval_s)
        self.robots = CrawlRobots(self.base)
        self.base.robots = self.robots
        self.fetchers: dict[float, PageFetcher] = {self.cc.min_interval_s: self.base}

    def interval(self, url: str) -> float:
        return max(self.cc.min_interval_s, min(self.robots.delay(url), self.cc.max_crawl_delay_s))

    def fetcher(self, interval: float) -> PageFetcher:
        f = self.fetchers.get(interval)
        if f is None:
            f = self.fetchers[interval] = make_fetcher(self.cfg, interval)
            f.robots = self.robots  # one robots.txt fetch per host for the whole crawl
        return f

    def fetch(self, rows: list[dict]) -> Iterator[tuple[dict, FetchResult]]:
        """Fetch the rows' URLs; robots.txt of every host is read first (in parallel), so that each
        host is scheduled at its Crawl-delay. A robots.txt that cannot be read fails its URLs."""
        origins = {}
        for row in rows:
            parts = urlsplit(row["url"])
            origins.setdefault(f"{parts.scheme}://{parts.netloc}", row["url"])

        def load(url):
            try:
                self.robots.allowed(url)
            except FetchError:
                pass  # the URL's own fetch asks again and records the reason

        with ThreadPoolExecutor(max(1, min(self.cc.threads, len(origins)))) as pool:
            list(pool.map(load, origins.values()))
        groups: dict[float, list[dict]] = defaultdict(list)
        for row in rows:
            groups[self.interval(row["url"])].append(row)
        runs = [self.fetcher(interval).fetch_all(group, url_of=lambda r: r["url"], threads=self.cc.threads)
                for interval, group in sorted(groups.items())]
        yield from runs[0] if len(runs) == 1 else _merged(runs)

    def sitemap_urls(self, seeds: list[str]) -> Iterator[str]:
        """The page URLs listed by the sitemaps that the seeds' robots.txt names (a sitemap index is
        followed one level; at most MAX_SITEMAPS sitemaps per origin)."""
        for origin in dict.fromkeys(f"{urlsplit(u).scheme}://{urlsplit(u).netloc}" for u in seeds):
            try:
                self.robots.allowed(origin + "/")
            except FetchError:
                continue
            todo, done = list(self.robots.sitemaps.get(origin.lower(), [])), 0
            while todo and done < MAX_SITEMAPS:
                url, done = todo.pop(0), done + 1
                _any_body.on = True
                try:
                    result = self.base.fetch(url)
                finally:
                    _any_body.on = False
                if not result.ok:
                    log.warn(f"crawl: sitemap {url}: {result.reason}")
                    continue
                index, locs = parse_sitemap(result.data, self.cc.max_bytes)
                if index:
                    todo += locs
                else:
                    yield from locs

    def close(self) -> None:
        for f in self.fetchers.values():
            f.close()


_LOC = re.compile(rb"<loc>\s*([^<]*?)\s*</loc>", re.I)
MAX_SITEMAPS = 50


def parse_sitemap(data: bytes, max_bytes: int) -> tuple[bool, list[str]]:
    """(is a sitemap index, its <loc> URLs) of a sitemap (XML, gzipped or not). A regex rather than an
    XML parser: no entity expansion, and a broken sitemap still gives its well-formed entries."""
    if data[:2] == b"\x1f\x8b":
        import zlib

        data = zlib.decompressobj(31).decompress(data, max_bytes)
    locs = [html.unescape(m.group(1).decode("utf-8", "replace")) for m in _LOC.finditer(data)]
    return b"<sitemapindex" in data[:4096].lower(), locs


# --- WARC ------------------------------------------------------------------------------------------


class WarcPart:
    """One WARC part: a warcinfo record, then request/response/metadata per page; the index rows."""

    def __init__(self, path: str, name: str, cfg):
        from warcio.warcwriter import WARCWriter

        self.name = name
        self.f = open(path, "wb")
        self.writer = WARCWriter(self.f, gzip=True, warc_version="1.0")
        self.ua = user_agent(cfg)
        self.index: list[dict] = []
        info = {"software": "wit-builder crawl", "format": "WARC File Format 1.0", "http-header-user-agent": self.ua,
                "robots": "obey", "isPartOf": cfg.output_dir}
        w = self.writer
        w.write_record(w.create_warcinfo_record(name, info))

    def add(self, result: FetchResult, depth: int, via: str | None) -> None:
        from warcio.statusandheaders import StatusAndHeaders

        w, url, body = self.writer, result.final_url or result.url, result.data
        parts = urlsplit(url)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        resp_id = f"<urn:uuid:{uuid.uuid4()}>"
        common = {"WARC-Date": now}
        path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        request = StatusAndHeaders(f"GET {path} HTTP/1.1", [
            ("Host", parts.netloc), ("User-Agent", self.ua), ("Accept", ACCEPT), ("Accept-Encoding", "identity")],
            is_http_request=True)
        w.write_record(w.create_warc_record(url, "request", http_headers=request, warc_headers_dict={
            **common, "WARC-Concurrent-To": resp_id}))
        headers = []
        for k, v in result.headers:  # the body is stored decoded: say so, as Common Crawl does
            low = k.lower()
            if low in ("transfer-encoding", "content-encoding", "content-length"):
                if low != "content-length":
                    headers.append((f"X-Crawler-{k}", v))
                continue
            headers.append((k, v))
        headers.append(("Content-Length", str(len(body))))
        offset = self.f.tell()
        w.write_record(w.create_warc_record(
            url, "response", payload=io.BytesIO(body), length=len(body),
            http_headers=StatusAndHeaders(result.status_line, headers, protocol=result.protocol),
            warc_headers_dict={**common, "WARC-Record-ID": resp_id}))
        length = self.f.tell() - offset
        meta = f"crawl-depth: {depth}\r\nfetch-attempts: {result.attempts}\r\n"
        if via:
            meta += f"via: {via}\r\n"
        meta_b = meta.encode()
        w.write_record(w.create_warc_record(
            url, "metadata", payload=io.BytesIO(meta_b), length=len(meta_b), warc_content_type="application/warc-fields",
            warc_headers_dict={**common, "WARC-Concurrent-To": resp_id}))
        mime = dict((k.lower(), v) for k, v in result.headers).get("content-type", "")
        self.index.append({"url": url, "status": result.http_status, "mime": mime.split(";")[0].strip(),
                           "file": self.name, "offset": offset, "length": length})

    def close(self) -> None:
        self.f.close()


# --- the rounds ------------------------------------------------------------------------------------


def _name(r: int, k: int | None = None) -> str:
    return f"round-{r:05d}" if k is None else f"round-{r:05d}-part-{k:05d}"


def _write_parquet(rows: list[dict], schema: pa.Schema, path: str) -> None:
    """Write whole, then rename: a reader never sees half a file."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    os.replace(tmp, path)


def _column(path: str, name: str) -> Iterator:
    """One column's values, read a batch at a time."""
    for batch in pq.ParquetFile(path).iter_batches(columns=[name], batch_size=65536):
        yield from batch.column(0).to_pylist()


def _chunks(path: str, size: int) -> Iterator[list[dict]]:
    """The file's rows in lists of exactly ``size`` (the last one shorter), whatever its row groups."""
    chunk: list[dict] = []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=size):
        for row in batch.to_pylist():
            chunk.append(row)
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def fingerprint(url: str) -> int:
    return int.from_bytes(hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class Seen:
    """A set of URLs kept as sorted 64-bit fingerprints: 8 bytes a URL, so the crawl's memory stays
    small as the frontier grows (10⁶ URLs: 8 MB). Two URLs share a fingerprint with probability
    about n²/2⁶⁵ (10⁸ URLs: 3·10⁻⁴), and then the second is taken as seen and not crawled."""

    def __init__(self):
        self.fps = np.empty(0, dtype=np.uint64)

    def update(self, urls: Iterable[str | None]) -> None:
        self.add_fingerprints(fingerprint(u) for u in urls if u)

    def add_fingerprints(self, fps: Iterable[int]) -> None:
        new = np.fromiter(fps, dtype=np.uint64)
        if len(new):
            self.fps = np.union1d(self.fps, new)

    def __contains__(self, item: str | int) -> bool:
        fp = np.uint64(item if isinstance(item, int) else fingerprint(item))
        i = int(np.searchsorted(self.fps, fp))
        return i < len(self.fps) and self.fps[i] == fp

    def __len__(self) -> int:
        return len(self.fps)


def _clean_tmp(folder: str) -> None:
    for name in os.listdir(folder):
        if ".tmp-" in name:
            os.remove(os.path.join(folder, name))


class Rounds:
    """The crawl's files under ``out`` (see the module docstring) and its breadth-first loop."""

    def __init__(self, ctx: StageContext):
        self.ctx, self.cfg, self.cc, self.out = ctx, ctx.cfg, ctx.cfg.crawl, ctx.tmp
        for d in ("frontier", "rejected", "warc", "index", "pages", "rounds"):
            os.makedirs(f"{self.out}/{d}", exist_ok=True)
            _clean_tmp(f"{self.out}/{d}")  # leftovers of a killed run

    def path(self, kind: str, r: int, k: int | None = None) -> str:
        ext = {"warc": ".warc.gz", "rounds": ".json"}.get(kind, ".parquet")
        return f"{self.out}/{kind}/{_name(r, k)}{ext}"

    def rounds_on_disk(self) -> Iterator[int]:
        r = 0
        while os.path.exists(self.path("frontier", r)):
            yield r
            r += 1

    def seed(self, seeds: list[str], crawler: Crawler) -> Scope:
        """Round 0's frontier (written once): the seeds, and with crawl.sitemaps the pages of the
        sitemaps their robots.txt names; the scope from the seeds' hosts."""
        sc = self.cc
        good = []
        for raw in seeds:
            url = normalise(raw, sc.strip_params)
            if url is None:
                self.ctx.stats.drop("bad_url")
            else:
                good.append(url)
        good = list(dict.fromkeys(good))
        if not good:
            raise UserError("crawl: no seed is an http(s) URL")
        scope = Scope(sc, {host_of(u) for u in good})
        if not os.path.exists(self.path("frontier", 0)):
            per_host: Counter = Counter()
            rows, rejected = [], []
            listed = []
            if sc.sitemaps:
                listed = [u for u in map(partial(normalise, strip_params=sc.strip_params), crawler.sitemap_urls(good))
                          if u is not None]
            for url in dict.fromkeys(good + listed):
                host = host_of(url)
                if url not in scope:
                    rejected.append({"url": url, "depth": 0, "reason": "out_of_scope"})
                elif per_host[host] >= sc.max_pages_per_host or len(rows) >= sc.max_pages:
                    rejected.append({"url": url, "depth": 0, "reason": "budget_exhausted"})
                else:
                    per_host[host] += 1
                    rows.append({"url": url, "depth": 0, "host": host})
            _write_parquet(rejected, REJECTED, self.path("rejected", 0))
            _write_parquet(rows, FRONTIER, self.path("frontier", 0))
        return scope

    def run(self, seeds: list[str]) -> dict:
        crawler = Crawler(self.cfg)
        try:
            scope = self.seed(seeds, crawler)
            r = 0
            while os.path.exists(self.path("frontier", r)):
                if not os.path.exists(self.path("rounds", r)):
                    self.crawl_round(r, crawler)
                    self.next_frontier(r, scope)
                    storage_json(self.path("rounds", r), self.round_counts(r))
                r += 1
        finally:
            crawler.close()
        return self.totals()

    def crawl_round(self, r: int, crawler: Crawler) -> None:
        seen = None
        for k, rows in enumerate(_chunks(self.path("frontier", r), self.cc.part_pages)):
            if os.path.exists(self.path("pages", r, k)):
                continue  # complete: a rerun never fetches it again
            seen = seen if seen is not None else self.seen(upto=r)
            self.crawl_part(r, k, rows, crawler, seen)

    def crawl_part(self, r: int, k: int, rows: list[dict], crawler: Crawler, seen_before: Seen) -> None:
        t0 = time.perf_counter()
        suffix = f".tmp-{uuid.uuid4().hex[:8]}"
        warc_path, index_path, pages_path = self.path("warc", r, k), self.path("index", r, k), self.path("pages", r, k)
        warc = WarcPart(warc_path + suffix, os.path.basename(warc_path), self.cfg)
        outcomes = []
        try:
            for row, result in crawler.fetch(rows):
                outcomes.append(self.outcome(row, result, warc, seen_before))
        finally:
            warc.close()
        _write_parquet(warc.index, INDEX, index_path + suffix)
        os.replace(warc_path + suffix, warc_path)
        os.replace(index_path + suffix, index_path)
        outcomes.sort(key=lambda o: o["url"])
        _write_parquet(outcomes, PAGES, pages_path)  # last: marks the part complete
        stored = sum(o["reason"] is None for o in outcomes)
        log.info(f"crawl: {_name(r, k)}: {stored}/{len(rows)} pages stored in {time.perf_counter() - t0:.1f}s")

    def outcome(self, row: dict, result: FetchResult, warc: WarcPart, seen_before: Seen) -> dict:
        url, depth = row["url"], row["depth"]
        out = {"url": url, "depth": depth, "final_url": None, "reason": result.reason, "links": None}
        if not result.ok:
            return out
        final = normalise(result.final_url or url, self.cc.strip_params) or url
        out["final_url"] = final
        if final != url and final in seen_before:
            out["reason"] = "duplicate"
            return out
        result.final_url = final
        warc.add(result, depth, via=url if final != url else None)
        ctype = dict((k.lower(), v) for k, v in result.headers).get("content-type", "")
        out["links"] = page_links(result.data, ctype, final)
        return out

    def seen(self, upto: int) -> Seen:
        """Every URL queued or rejected in rounds 0..upto, and the pages redirects reached in rounds
        before ``upto`` (those of round ``upto`` too with ``finals=True``)."""
        seen = Seen()
        for r in range(upto + 1):
            for kind in ("frontier", "rejected"):
                if os.path.exists(p := self.path(kind, r)):
                    seen.update(_column(p, "url"))
        for r in range(upto):
            for p in self._parts(r):
                seen.update(_column(p, "final_url"))
        return seen

    def _parts(self, r: int) -> list[str]:
        folder = f"{self.out}/pages"
        prefix = _name(r) + "-part-"
        return sorted(f"{folder}/{n}" for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(".parquet"))

    def next_frontier(self, r: int, scope: Scope) -> None:
        """Round r+1's frontier from round r's links: normalised, in scope, not seen, within depth and
        budgets; the links not queued go to rejected/ with their reason (each URL once). Streams the
        round's parts one at a time: memory is the seen fingerprints plus one part."""
        cc = self.cc
        seen = self.seen(upto=r)
        for p in self._parts(r):  # a redirect's target counts as seen
            seen.update(_column(p, "final_url"))
        per_host: Counter = Counter()
        total = 0
        for q in range(r + 1):
            for host in _column(self.path("frontier", q), "host"):
                per_host[host] += 1
                total += 1
        depth = r + 1
        frontier_path, rejected_path = self.path("frontier", depth), self.path("rejected", depth)
        suffix = f".tmp-{uuid.uuid4().hex[:8]}"
        queued = pq.ParquetWriter(frontier_path + suffix, FRONTIER)
        rejects = pq.ParquetWriter(rejected_path + suffix, REJECTED)
        n_queued = 0
        try:
            for p in self._parts(r):
                rows, rejected, fresh = [], [], set()
                for page in _column(p, "links"):
                    for link in page or ():
                        url = normalise(link, cc.strip_params)
                        if url is None:
                            continue  # not a web page (mailto:, javascript: …)
                        fp = fingerprint(url)
                        if fp in fresh or fp in seen:
                            continue
                        fresh.add(fp)
                        host = host_of(url)
                        if url not in scope:
                            reason = "out_of_scope"
                        elif depth > cc.max_depth:
                            reason = "max_depth"
                        elif per_host[host] >= cc.max_pages_per_host or total >= cc.max_pages:
                            reason = "budget_exhausted"
                        else:
                            per_host[host] += 1
                            total += 1
                            rows.append({"url": url, "depth": depth, "host": host})
                            continue
                        rejected.append({"url": url, "depth": depth, "reason": reason})
                seen.add_fingerprints(fresh)
                if rows:
                    queued.write_table(pa.Table.from_pylist(rows, schema=FRONTIER))
                    n_queued += len(rows)
                rejects.write_table(pa.Table.from_pylist(rejected, schema=REJECTED))
        finally:
            queued.close()
            rejects.close()
        os.replace(rejected_path + suffix, rejected_path)
        if n_queued:
            os.replace(frontier_path + suffix, frontier_path)
        else:
            os.remove(frontier_path + suffix)

    def round_counts(self, r: int) -> dict:
        outcomes = Counter()
        for p in self._parts(r):
            outcomes.update(str(x) for x in pq.read_table(p, columns=["reason"]).column("reason").to_pylist())
        return {"round": r, "frontier": pq.read_metadata(self.path("frontier", r)).num_rows,
                "outcomes": dict(outcomes)}

    def totals(self) -> dict:
        """The crawl's stats: pages stored (output_rows), every URL not crawled by reason (drops)."""
        stats = self.ctx.stats
        frontier_sizes, hosts, queued = [], set(), 0
        stored = 0
        for r in self.rounds_on_disk():
            t = pq.read_table(self.path("frontier", r), columns=["host"])
            frontier_sizes.append(t.num_rows)
            queued += t.num_rows
            hosts.update(t.column("host").to_pylist())
            for p in self._parts(r):
                for reason in pq.read_table(p, columns=["reason"]).column("reason").to_pylist():
                    if reason is None:
                        stored += 1
                    else:
                        stats.drop(reason)
        for r in range(len(frontier_sizes) + 1):
            p = self.path("rejected", r)
            if os.path.exists(p):
                for reason in pq.read_table(p, columns=["reason"]).column("reason").to_pylist():
                    stats.drop(reason)
        stats.input_rows = queued
        stats.output_rows = stored
        stats.extra.update({
            "rounds": len(frontier_sizes), "frontier_sizes": frontier_sizes, "hosts": len(hosts),
            "warc_files": sorted(n for n in os.listdir(f"{self.out}/warc") if n.endswith(".warc.gz")),
            "user_agent": user_agent(self.cfg),
        })
        return None


def storage_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def warc_files(output: str) -> list[str]:
    """The crawl's WARC files (the input of `wit extract`)."""
    folder = f"{output.rstrip('/')}/warc"
    return sorted(f"{folder}/{n}" for n in os.listdir(folder) if n.endswith(".warc.gz")) if os.path.isdir(folder) else []


def _seeds_default(cfg):
    return list(cfg.crawl.seeds) or None


@stage("crawl", input=_seeds_default, output="crawl", writes="parts")
def run_crawl(ctx: StageContext) -> None:
    """Crawl from ``input`` (seed URLs or files of them; default: config crawl.seeds) into ``output``
    (default: <output_dir>/crawl): WARC files, a CDX-style index, frontiers and per-page outcomes."""
    if "://" in ctx.output:
        raise UserError(f"crawl writes to a local folder (got {ctx.output}); copy the WARC files afterwards")
    sources = [ctx.input] if isinstance(ctx.input, str) else list(ctx.input or [])
    if not sources:
        raise UserError("crawl: no seeds: pass URLs or files, or set crawl.seeds in the config")
    seeds = read_seeds(sources, ctx.cfg.crawl.seed_url_col)
    Rounds(ctx).run(seeds)
    return None


def register(sub, common) -> None:
    from pipeline.cli import flag, stage_command

    p = stage_command(
        sub, common, run_crawl, help="seed pages -> WARC files (polite crawler, robots.txt, breadth-first)",
        description="Crawl HTML pages breadth first from seed URLs (or files of them: text, Parquet/CSV with "
        "a url column) into WARC files (output/warc/*.warc.gz, which `wit extract` reads) with a CDX-style index "
        "(output/index), each round's frontier and every URL's outcome. robots.txt is always honoured, each host "
        "at most one request per crawl.min_interval_s (or its Crawl-delay). Resumable: a rerun skips complete "
        "rounds and parts.",
        input_help="seed URLs or files (default: config crawl.seeds)",
        output_help="output folder (default: <output_dir>/crawl)", positional_input="*",
    )
    flag(p, "--scope", key="crawl.scope", choices=["same_host", "same_domain", "any"])
    flag(p, "--max-depth", key="crawl.max_depth", type=int)
    flag(p, "--max-pages", key="crawl.max_pages", type=int)
    flag(p, "--max-pages-per-host", key="crawl.max_pages_per_host", type=int)
    flag(p, "--threads", key="crawl.threads", type=int)
