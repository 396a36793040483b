"""`wit crawl`: a polite page crawler that writes WARC files `wit extract` reads unchanged.

**Rounds.** Breadth first: round ``r`` fetches its frontier (the seeds are round 0) and computes
round ``r+1``'s frontier from the links of its pages. Under the output folder (crawl/):

    frontier/round-RRRRR/                   Parquet: url, depth, host, group: the pages round r fetches
    rejected/round-RRRRR/                   Parquet: url, depth, reason: links of round r-1 not queued
    warc/round-RRRRR-part-GGGGG-CCCCC.warc.gz   request, response and metadata records, gzip per record
    index/round-RRRRR-part-GGGGG-CCCCC.parquet  CDX-style: url, status, mime, file, offset, length
    pages/round-RRRRR-part-GGGGG-CCCCC.parquet  every frontier URL's outcome: reason (None: stored), links
    rounds/round-RRRRR.json                 the round's counts; its presence marks the round complete

**Where it runs.** Each round is two Spark jobs. The fetch: the frontier is partitioned by host into
``group``s (``crawl.tasks``, default Spark's parallelism), one task per group, so every request to
a host comes from one task and the task's HostScheduler (per-host connection cap, minimum
interval, Retry-After, circuit breaker) is polite for the whole job. A task fetches its group part
by part (``crawl.part_pages`` URLs, ``CCCCC``) on ``crawl.threads`` threads, with its own robots.txt
cache: robots.txt is read once per host per round; a host's pace carries from one part to the
next (``Fetcher.host_not_before``). The next frontier: links exploded, normalised, deduplicated and anti-joined against every URL queued or rejected so far, budgets applied by window
functions; the driver holds none of it, so its memory does not grow with the frontier (workers and
tasks read the output folder: a shared filesystem on a cluster).

**Resume.** A part is the unit of work: its three files are written under temporary names and
renamed, the pages file last, which marks the part complete. A rerun skips complete rounds and
parts and redoes a part whose pages file is missing, replacing whatever WARC it had (no
duplicate records). A frontier is written whole and renamed, then the round's json.

**Politeness and safety.** Every fetch goes through ``pipeline.fetch.Fetcher`` (address safety,
deadlines, size caps) with robots.txt always on (RFC 9309). A host's ``Crawl-delay`` (up to
``crawl.max_crawl_delay_s``) raises its minimum interval above ``crawl.min_interval_s``: a part's
hosts are grouped by interval and each group is fetched with a fetcher of that interval, all groups
at the same time. Only HTML pages are stored (``not_html``). Redirects are not followed in the
fetch: a 3xx is recorded as ``redirected`` and its target queued for the next round at the same
depth, through the scope rules, robots.txt and the seen-URL check like any link (as Heritrix and
Common Crawl do), so a page reached both ways is stored once. With ``crawl.sitemaps`` the pages of
the sitemaps named by the seeds' robots.txt are seeds too.

**Traps** (endless calendars, session ids, link farms) are bounded by URL normalisation (session-id
parameters stripped, fragments dropped), the scope rules, ``max_depth`` and the per-host and total
page budgets. Every URL not crawled has a reason in ``_stats.json`` drops, counted once per URL:
the fetcher's reasons, robots_disallowed, not_html, redirected, out_of_scope, max_depth,
budget_exhausted.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import ipaddress
import json
import os
import queue
import re
import shutil
import threading
import time
import urllib.robotparser
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline import inputs, log
from pipeline.errors import UserError
from pipeline.fetch import Fetcher, FetchError, FetchResult, RobotsCache
from pipeline.stage import StageContext, stage

# Crawl decisions, beside the fetcher's REASONS.
CRAWL_REASONS = ("robots_disallowed", "out_of_scope", "budget_exhausted", "not_html", "max_depth")
HTML_TYPES = ("text/html", "application/xhtml+xml")
ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"
FRONTIER = pa.schema([("url", pa.string()), ("depth", pa.int32()), ("host", pa.string()), ("group", pa.int32())])
REJECTED = pa.schema([("url", pa.string()), ("depth", pa.int32()), ("reason", pa.string())])
INDEX = pa.schema([("url", pa.string()), ("status", pa.int32()), ("mime", pa.string()), ("file", pa.string()),
                   ("offset", pa.int64()), ("length", pa.int64())])
PAGES = pa.schema([("url", pa.string()), ("depth", pa.int32()), ("reason", pa.string()),
                   ("links", pa.list_(pa.string()))])
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
        inputs.require_seed_file(path, url_col)  # a damaged seeds file stops, naming it
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
    WARC; a 2xx that is not HTML fails as ``not_html`` before its body is read. It follows no
    redirect: a 3xx ends as ``redirected`` with its target as the detail, and the target is queued
    like a link (scope, robots.txt and the seen-URL check apply to it, so no page is stored twice)."""

    def session(self):
        s = super().session()
        s.headers["Accept"] = ACCEPT
        return s

    def _read(self, url, final_url, resp, att, max_bytes) -> FetchResult:
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


def is_html_type(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() in HTML_TYPES


class CrawlRobots(RobotsCache):
    """The fetcher's robots.txt cache, also keeping each origin's Crawl-delay for our user agent."""

    def __init__(self, fetcher: Fetcher):
        super().__init__(fetcher)
        self.delays: dict[str, float] = {}
        self.sitemaps: dict[str, list[str]] = {}  # the Sitemap: lines of each origin's robots.txt

    def _load(self, origin: str):
        got = super()._load(origin)
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


def make_fetcher(cfg, interval_s: float, pages: bool = True) -> Fetcher:
    """A fetcher from the download settings (safety, timeouts, DNS), with the crawl's own: for pages
    (PageFetcher: robots.txt asked, no redirect followed) or for robots.txt and sitemaps (Fetcher:
    redirects followed, as RFC 9309 asks)."""
    dl, cc = cfg.download, cfg.crawl
    return (PageFetcher if pages else Fetcher)(
        timeout_s=dl.timeout_s, max_bytes=cc.max_bytes, max_redirects=dl.max_redirects, follow_redirects=not pages,
        retries=dl.retries, user_agent=user_agent(cfg), allow_hosts=tuple(dl.allow_hosts),
        opt_out_directives=frozenset(dl.disallowed_header_directives), respect_robots_txt=pages,
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
    """Fetches one task's pages: one robots.txt cache (and one fetcher per host interval) for the task."""

    def __init__(self, cfg):
        self.cfg, self.cc = cfg, cfg.crawl
        self.side = make_fetcher(cfg, self.cc.min_interval_s, pages=False)  # robots.txt and sitemaps
        self.robots = CrawlRobots(self.side)
        self.fetchers: dict[float, Fetcher] = {}

    def interval(self, url: str) -> float:
        return max(self.cc.min_interval_s, min(self.robots.delay(url), self.cc.max_crawl_delay_s))

    def fetcher(self, interval: float) -> Fetcher:
        f = self.fetchers.get(interval)
        if f is None:
            f = self.fetchers[interval] = make_fetcher(self.cfg, interval)
            f.robots = self.robots  # one robots.txt fetch per host for the task
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
                result = self.side.fetch(url)
                if not result.ok:
                    log.warn(f"crawl: sitemap {url}: {result.reason}")
                    continue
                index, locs = parse_sitemap(result.data, self.cc.max_bytes)
                if index:
                    todo += locs
                else:
                    yield from locs

    def close(self) -> None:
        for f in [self.side, *self.fetchers.values()]:
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

    def add(self, result: FetchResult, depth: int) -> None:
        from warcio.statusandheaders import StatusAndHeaders

        w, url, body = self.writer, result.url, result.data
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
        meta_b = f"crawl-depth: {depth}\r\nfetch-attempts: {result.attempts}\r\n".encode()
        w.write_record(w.create_warc_record(
            url, "metadata", payload=io.BytesIO(meta_b), length=len(meta_b), warc_content_type="application/warc-fields",
            warc_headers_dict={**common, "WARC-Concurrent-To": resp_id}))
        mime = dict((k.lower(), v) for k, v in result.headers).get("content-type", "")
        self.index.append({"url": url, "status": result.http_status, "mime": mime.split(";")[0].strip(),
                           "file": self.name, "offset": offset, "length": length})

    def close(self) -> None:
        self.f.close()


# --- the rounds ------------------------------------------------------------------------------------


def _name(r: int, g: int | None = None, c: int | None = None) -> str:
    return f"round-{r:05d}" if g is None else f"round-{r:05d}-part-{g:05d}-{c:05d}"


def _write_parquet(rows: list[dict], schema: pa.Schema, path: str) -> None:
    """Write whole, then rename: a reader never sees half a file."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    os.replace(tmp, path)


def _publish(tmp: str, path: str) -> None:
    """Rename a folder written whole into place (a rerun's leftover of the same name goes first)."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.replace(tmp, path)


def _clean_tmp(folder: str) -> None:
    for name in os.listdir(folder):
        if ".tmp-" in name:
            p = os.path.join(folder, name)
            shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)


def _value_counts(paths: list[str], column: str) -> Counter:
    """How often each value of ``column`` occurs in the Parquet files or folders (None as "None")."""
    counts: Counter = Counter()
    for p in paths:
        table = ds.dataset(p, format="parquet").to_table(columns=[column])
        for item in pc.value_counts(table.column(column)).to_pylist():
            counts[str(item["values"])] += item["counts"]
    return counts


class CrawlFiles:
    """Where the crawl's files are under ``out`` (see the module docstring); used by the driver and
    by the fetch tasks."""

    def __init__(self, out: str):
        self.out = out

    def path(self, kind: str, r: int, g: int | None = None, c: int | None = None) -> str:
        ext = {"warc": ".warc.gz", "rounds": ".json", "frontier": "", "rejected": ""}.get(kind, ".parquet")
        return f"{self.out}/{kind}/{_name(r, g, c)}{ext}"

    def rounds_on_disk(self) -> Iterator[int]:
        r = 0
        while os.path.exists(self.path("frontier", r)):
            yield r
            r += 1

    def parts(self, r: int) -> list[str]:
        """The complete parts of round r: their pages files."""
        folder = f"{self.out}/pages"
        prefix = _name(r) + "-part-"
        return sorted(f"{folder}/{n}" for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(".parquet"))

    def group_chunks(self, r: int, g: int, size: int) -> Iterator[list[dict]]:
        """Group g's frontier rows of round r, by URL, in lists of ``size`` (the last one shorter),
        read a batch at a time: ``write_frontier`` put each group in one file, sorted by URL, so the
        same rows make the same parts on a rerun."""
        batches = ds.dataset(self.path("frontier", r), format="parquet").to_batches(
            columns=["url", "depth"], filter=ds.field("group") == g, use_threads=False)
        chunk: list[dict] = []
        for batch in batches:
            for row in batch.to_pylist():
                chunk.append(row)
                if len(chunk) == size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk


def crawl_part(files: CrawlFiles, cfg, r: int, g: int, c: int, rows: list[dict], crawler: Crawler) -> None:
    """Fetch one part's pages into its WARC, index and pages files (each written under a temporary
    name and renamed, the pages file last: it marks the part complete)."""
    t0 = time.perf_counter()
    suffix = f".tmp-{uuid.uuid4().hex[:8]}"
    warc_path, index_path, pages_path = (files.path(k, r, g, c) for k in ("warc", "index", "pages"))
    warc = WarcPart(warc_path + suffix, os.path.basename(warc_path), cfg)
    outcomes = []
    try:
        for row, result in crawler.fetch(rows):
            outcomes.append(outcome(row, result, warc))
    finally:
        warc.close()
    _write_parquet(warc.index, INDEX, index_path + suffix)
    os.replace(warc_path + suffix, warc_path)
    os.replace(index_path + suffix, index_path)
    outcomes.sort(key=lambda o: o["url"])
    _write_parquet(outcomes, PAGES, pages_path)  # last: marks the part complete
    stored = sum(o["reason"] is None for o in outcomes)
    log.info(f"crawl: {_name(r, g, c)}: {stored}/{len(rows)} pages stored in {time.perf_counter() - t0:.1f}s")


def outcome(row: dict, result: FetchResult, warc: WarcPart) -> dict:
    """A frontier URL's row in pages/: its reason (None: stored in the WARC) and the links to follow
    (a redirect's one link is its target)."""
    url, depth = row["url"], row["depth"]
    out = {"url": url, "depth": depth, "reason": result.reason, "links": None}
    if result.reason == "redirected":
        out["links"] = [result.detail]
    if not result.ok:
        return out
    warc.add(result, depth)
    ctype = dict((k.lower(), v) for k, v in result.headers).get("content-type", "")
    out["links"] = page_links(result.data, ctype, url)
    return out


def _crawl_group(task: tuple) -> None:
    """A Spark task: fetch group g of round r (every URL of its hosts), part by part, skipping the
    complete parts. A host is in one group, so its politeness holds for the whole job."""
    from pipeline.config import RunConfig

    cfg_json, out, r, g = task
    cfg = RunConfig.model_validate_json(cfg_json)
    files = CrawlFiles(out)
    crawler = Crawler(cfg)
    try:
        for c, rows in enumerate(files.group_chunks(r, g, cfg.crawl.part_pages)):
            if not os.path.exists(files.path("pages", r, g, c)):  # complete: a rerun never fetches it again
                crawl_part(files, cfg, r, g, c, rows, crawler)
    finally:
        crawler.close()


def _normalised_links(batches, strip_params: tuple[str, ...], scope: Scope):
    """mapInPandas: (link, depth) → (url, host, depth, in_scope); links that are no web page dropped."""
    import pandas as pd

    for df in batches:
        rows = []
        for link, depth in zip(df["link"], df["depth"]):
            url = normalise(link, strip_params) if isinstance(link, str) else None
            if url is not None:
                rows.append((url, host_of(url), int(depth), url in scope))
        yield pd.DataFrame(rows, columns=["url", "host", "depth", "in_scope"])


class Rounds(CrawlFiles):
    """The crawl's breadth-first loop on the driver: each round's fetch is a Spark job of one task
    per host group; each next frontier a Spark job too (anti-join against every URL seen)."""

    def __init__(self, ctx: StageContext):
        super().__init__(ctx.tmp)
        self.ctx, self.cfg, self.cc = ctx, ctx.cfg, ctx.cfg.crawl
        for d in ("frontier", "rejected", "warc", "index", "pages", "rounds"):
            os.makedirs(f"{self.out}/{d}", exist_ok=True)
            _clean_tmp(f"{self.out}/{d}")  # leftovers of a killed run

    def groups(self) -> int:
        """Host groups of a new frontier: one fetch task each (crawl.tasks, else Spark's parallelism)."""
        return self.cc.tasks or self.ctx.spark.sparkContext.defaultParallelism

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
            suffix = f".tmp-{uuid.uuid4().hex[:8]}"
            os.makedirs(self.path("rejected", 0) + suffix)
            pq.write_table(pa.Table.from_pylist(rejected, schema=REJECTED),
                           f"{self.path('rejected', 0)}{suffix}/part-00000.parquet")
            _publish(self.path("rejected", 0) + suffix, self.path("rejected", 0))
            self.write_frontier(self.ctx.spark.createDataFrame(rows, "url string, depth int, host string"), 0, suffix)
        return scope

    def write_frontier(self, df, r: int, suffix: str) -> int:
        """Write round r's frontier from ``df`` (url, depth, host) with its host groups (the one rule:
        xxhash64(host) mod crawl.tasks), each group in one file, sorted by URL (``group_chunks``
        relies on it); nothing when it is empty. Returns its rows."""
        from pyspark.sql import functions as F

        groups, tmp = self.groups(), self.path("frontier", r) + suffix
        (df.select("url", F.col("depth").cast("int"), "host",
                   F.pmod(F.xxhash64("host"), F.lit(groups)).cast("int").alias("group"))
         .repartition(groups, "group").sortWithinPartitions("group", "url").write.parquet(tmp))
        n = ds.dataset(tmp, format="parquet").count_rows()
        if n:
            _publish(tmp, self.path("frontier", r))
        else:
            shutil.rmtree(tmp)
        return n

    def run(self, seeds: list[str]) -> None:
        crawler = Crawler(self.cfg)  # the driver's: robots.txt for the sitemaps of the seeds
        try:
            scope = self.seed(seeds, crawler)
        finally:
            crawler.close()
        r = 0
        while os.path.exists(self.path("frontier", r)):
            if not os.path.exists(self.path("rounds", r)):
                t0 = time.perf_counter()
                self.crawl_round(r)
                t1 = time.perf_counter()
                self.next_frontier(r, scope)
                counts = {**self.round_counts(r), "fetch_s": round(t1 - t0, 3),
                          "frontier_s": round(time.perf_counter() - t1, 3)}
                storage_json(self.path("rounds", r), counts)
                log.info(f"crawl: round {r}: {counts['frontier']} URLs fetched in {counts['fetch_s']:.1f}s, next "
                         f"frontier in {counts['frontier_s']:.1f}s")
            r += 1
        self.totals()

    def crawl_round(self, r: int) -> None:
        spark, path = self.ctx.spark, self.path("frontier", r)
        groups = sorted(row[0] for row in spark.read.parquet(path).select("group").distinct().collect())
        sc = spark.sparkContext
        n = ds.dataset(path, format="parquet").count_rows()
        sc.setJobDescription(f"wit crawl: round {r}, {n} pages in {len(groups)} host group(s)")
        log.info(f"crawl: round {r}: {n} URLs in {len(groups)} host group(s)")
        cfg_json = self.cfg.model_dump_json()
        tasks = [(cfg_json, self.out, r, g) for g in groups]
        sc.parallelize(tasks, len(tasks)).foreach(_crawl_group)

    def next_frontier(self, r: int, scope: Scope) -> None:
        """Round r+1's frontier from round r's links, as a Spark job: normalised, deduplicated, not
        seen (an anti-join against every URL queued or rejected so far), in scope, within max_depth,
        the per-host budget (a host's earlier URLs count, then its new ones by depth and URL) and the
        total one (the cut by URL hash). The links not queued go to rejected/ with their reason, each
        URL once. Memory: Spark's (it spills), not the driver's, however large the frontier grows."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        cc, spark = self.cc, self.ctx.spark
        parts = self.parts(r)
        if not parts:
            return
        earlier = range(r + 1)
        frontiers = [self.path("frontier", q) for q in earlier]
        seen_paths = frontiers + [p for q in earlier if os.path.exists(p := self.path("rejected", q))]
        queued_so_far = sum(ds.dataset(p, format="parquet").count_rows() for p in frontiers)
        remaining = cc.max_pages - queued_so_far
        spark.sparkContext.setJobDescription(f"wit crawl: frontier of round {r + 1}")

        pages = spark.read.parquet(*parts)
        links = pages.select(
            F.when(F.col("reason") == "redirected", F.col("depth")).otherwise(F.col("depth") + 1).alias("depth"),
            F.explode("links").alias("link"))
        normalised = links.mapInPandas(
            partial(_normalised_links, strip_params=tuple(cc.strip_params), scope=scope),
            "url string, host string, depth int, in_scope boolean")
        new = normalised.groupBy("url").agg(F.min("depth").alias("depth"), F.first("host").alias("host"),
                                            F.first("in_scope").alias("in_scope"))
        seen = spark.read.parquet(*seen_paths).select("url")
        new = new.join(seen, "url", "left_anti")
        per_host = spark.read.parquet(*frontiers).groupBy("host").agg(F.count("*").alias("before"))
        rank = F.row_number().over(Window.partitionBy("host", "in_bounds").orderBy("depth", "url"))
        decided = (new.join(per_host, "host", "left")
                   .withColumn("in_bounds", F.col("in_scope") & (F.col("depth") <= cc.max_depth))
                   .withColumn("n", F.coalesce(F.col("before"), F.lit(0)) + rank)
                   .select("url", "depth", "host", F.when(~F.col("in_scope"), "out_of_scope")
                           .when(F.col("depth") > cc.max_depth, "max_depth")
                           .when(F.col("n") > cc.max_pages_per_host, "budget_exhausted").alias("reason")))
        suffix = f".tmp-{uuid.uuid4().hex[:8]}"
        staged = f"{self.out}/rejected/{_name(r + 1)}-staged{suffix}"
        decided.write.parquet(staged)
        try:
            decided = spark.read.parquet(staged)
            candidates = decided.where(F.col("reason").isNull())
            cut = candidates.orderBy(F.xxhash64("url"), "url").limit(max(remaining, 0))
            over = ds.dataset(staged, format="parquet").count_rows(filter=ds.field("reason").is_null()) > remaining
            kept = cut if over else candidates
            rejected = decided.where(F.col("reason").isNotNull()).select("url", F.col("depth").cast("int"), "reason")
            if over:
                rejected = rejected.unionByName(candidates.join(cut.select("url"), "url", "left_anti")
                                                .select("url", F.col("depth").cast("int"),
                                                        F.lit("budget_exhausted").alias("reason")))
            rejected.coalesce(self.groups()).write.parquet(self.path("rejected", r + 1) + suffix)
            _publish(self.path("rejected", r + 1) + suffix, self.path("rejected", r + 1))
            self.write_frontier(kept, r + 1, suffix)  # last: its presence starts the next round
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def round_counts(self, r: int) -> dict:
        return {"round": r, "frontier": ds.dataset(self.path("frontier", r), format="parquet").count_rows(),
                "outcomes": dict(_value_counts(self.parts(r), "reason"))}

    def totals(self) -> None:
        """The crawl's stats: pages stored (output_rows), every URL not crawled by reason (drops)."""
        stats = self.ctx.stats
        rounds = list(self.rounds_on_disk())
        frontiers = [self.path("frontier", r) for r in rounds]
        frontier_sizes = [ds.dataset(p, format="parquet").count_rows() for p in frontiers]
        outcomes = _value_counts([p for r in rounds for p in self.parts(r)], "reason")
        rejected = _value_counts([p for r in range(len(rounds) + 1) if os.path.exists(p := self.path("rejected", r))],
                                 "reason")
        for reason, n in (outcomes + rejected).items():
            if reason != "None":
                stats.drop(reason, n)
        from pyspark.sql import functions as F

        hosts = self.ctx.spark.read.parquet(*frontiers).agg(F.countDistinct("host")).first()[0]
        stats.input_rows = sum(frontier_sizes)
        stats.output_rows = outcomes["None"]
        timings = []
        for r in rounds:
            if os.path.exists(p := self.path("rounds", r)):
                with open(p) as f:
                    timings.append(json.load(f))
        stats.extra.update({
            "rounds": len(rounds), "frontier_sizes": frontier_sizes, "hosts": hosts,
            "fetch_s": round(sum(t.get("fetch_s", 0) for t in timings), 3),  # this run's and earlier runs' rounds
            "frontier_s": round(sum(t.get("frontier_s", 0) for t in timings), 3),
            "warc_files": sorted(n for n in os.listdir(f"{self.out}/warc") if n.endswith(".warc.gz")),
            "user_agent": user_agent(self.cfg),
        })


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


@stage("crawl", order=10, input=_seeds_default, output="crawl", writes="parts")
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
    flag(p, "--tasks", key="crawl.tasks", type=int)
