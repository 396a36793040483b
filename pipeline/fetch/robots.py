"""An origin's consent files, robots.txt and ``/.well-known/tdmrep.json``, fetched and kept per origin
(``RobotsCache``), and the one record of them a robots table stores (``OriginRecord``).

**Fetching robots.txt (RFC 9309 §2.3).** When ``respect_robots_txt`` is on, each origin's robots.txt
is fetched once by a fetcher (or read from the job's robots table, see ``pipeline.fetch.robots_table``)
and shared by its threads, through a fetch callable (the fetcher's ``read_side_file``: redirects
followed, at least 5; no opt-out header judged, so a 2xx is parsed whatever ``X-Robots-Tag`` it
carries; the body cut at ``max_bytes``, at least 500 KiB, and parsed that far). What the answer
means, and how long it is kept:

- 2xx: its rules, for ``max_age_s`` (at most 24 h);
- 4xx other than 429 (and more redirects than followed): no robots.txt, every URL allowed, as long;
- 5xx, 429, a network failure or an unsafe redirect: the site may not be crawled (a complete
  disallow); its URLs fail as ``robots_unavailable`` (transient: ``--retry-failed`` asks again)
  without a request, for ``unavailable_s`` or the ``Retry-After`` the answer asked for.

A URL its rules disallow fails as ``robots_disallowed``. The host's address is checked before
robots.txt is asked (by the fetcher), so an attack on a forbidden address is recorded as the attack.

**AI-training opt-outs before the request** (with ``ai_tokens``, ``pipeline.fetch.consent``): a group
of the robots.txt naming one of ``ai_tokens`` that disallows the URL → ``opted_out_robots_ai``; with
``tdmrep`` on, the origin's ``/.well-known/tdmrep.json`` (fetched right after its robots.txt, once, kept
as long; anything but a 2xx JSON array means "no declaration") reserving the URL → ``opted_out_tdmrep``.
An origin whose robots.txt is unavailable is not asked for its tdmrep.json.

**Parsing** is RFC 9309's, exactly: ``pipeline.fetch.robots_rules.RobotsRules`` (longest match, ``*``/``$``,
product-token agents; its docstring says all). Our agent is the product token of the User-Agent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline.fetch.consent import TdmRep, before_fetch_opt_out
from pipeline.fetch.outcome import FetchError, FetchResult
from pipeline.fetch.robots_rules import RobotsRules

MAX_ROBOTS_BYTES = 500 * 1024  # RFC 9309 §2.5: parse at least 500 KiB
MAX_TDMREP_BYTES = 500 * 1024
ROBOTS_REDIRECTS = 5  # RFC 9309 §2.3.1.2: follow at least five redirects
ALLOW_ALL_REASONS = frozenset({"http_404", "http_4xx", "too_many_redirects"})  # "unavailable" in RFC terms
TDMREP_PATH = "/.well-known/tdmrep.json"
ALLOW_ALL = RobotsRules.allow_all()


def parse_robots(body: bytes) -> RobotsRules:
    """The rules of a robots.txt body (RFC 9309 exactly: ``pipeline.fetch.robots_rules``)."""
    return RobotsRules.parse(body)


@dataclass
class OriginRecord:
    """What was learned of one origin, as a robots table row: ``status`` is ``ok`` (robots = the body read),
    ``allow_all`` (no robots.txt) or ``unavailable`` (disallow all until ``expires_at``); times are epoch
    seconds; ``tdmrep`` the tdmrep.json body when one was answered 2xx."""

    origin: str
    status: str
    fetched_at: float
    expires_at: float
    detail: str = ""
    robots: bytes | None = None
    tdmrep: bytes | None = None


class _Entry:
    """An origin's consent files: its rules (``None``: unavailable, disallow all) until ``expires``."""

    __slots__ = ("rules", "tdmrep", "expires", "detail", "done", "record")

    def __init__(self):
        self.rules: RobotsRules | None = None
        self.tdmrep: TdmRep | None = None
        self.expires = 0.0
        self.detail = ""
        self.record: OriginRecord | None = None
        self.done = threading.Event()  # set once loaded: until then other threads wait for it


class RobotsCache:
    """robots.txt (and tdmrep.json) per scheme://host:port, fetched with ``fetch(url, max_bytes) ->
    FetchResult`` and kept as the module docstring says; ``check`` judges a URL, ``crawl_delay`` and
    ``sitemaps`` report; ``preload`` takes a robots table's records, ``record`` gives one."""

    def __init__(self, fetch: Callable[[str, int], FetchResult], agent: str, max_age_s: float = 86_400.0,
                 unavailable_s: float = 600.0, max_bytes: int = MAX_ROBOTS_BYTES, wait_s: float = 20.0,
                 ai_tokens: Iterable[str] = (), tdmrep: bool = False):
        self.fetch, self.agent = fetch, agent
        self.max_age_s, self.unavailable_s = min(max_age_s, 86_400.0), unavailable_s
        self.max_bytes, self.wait_s = max(max_bytes, MAX_ROBOTS_BYTES), wait_s
        self.ai_tokens, self.tdmrep = tuple(ai_tokens), tdmrep
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._delays: dict[str, float] = {}  # host → its Crawl-delay for us (the largest of its origins')
        self.fetched = 0  # origins whose files this cache asked for itself (not from preload)

    def check(self, url: str) -> None:
        """Return when the origin lets us fetch ``url``; else FetchError robots_disallowed, robots_unavailable,
        opted_out_robots_ai or opted_out_tdmrep."""
        entry = self._entry(origin_of(url))
        if entry.rules is None:
            raise FetchError("robots_unavailable", entry.detail)
        if not entry.rules.allowed(self.agent, url):
            raise FetchError("robots_disallowed", url)
        if self.ai_tokens or entry.tdmrep is not None:
            reason = before_fetch_opt_out(url, entry.rules if self.ai_tokens else None, entry.tdmrep, self.ai_tokens)
            if reason:
                raise FetchError(reason, url)

    def crawl_delay(self, host: str) -> float:
        return self._delays.get(host, 0.0)

    def sitemaps(self, origin: str) -> list[str]:
        """The Sitemap: lines of the origin's robots.txt (fetched now if not yet)."""
        entry = self._entry(origin.lower())
        return entry.rules.sitemaps if entry.rules is not None else []

    def record(self, origin: str) -> OriginRecord:
        """The origin's record (fetched now if not yet, or if expired): what a robots table stores."""
        entry = self._entry(origin.lower())
        assert entry.record is not None
        return entry.record

    def preload(self, records: Iterable[OriginRecord], now: float | None = None) -> int:
        """Take a robots table's records that are still fresh (``expires_at`` after ``now``); returns how many."""
        now, mono, n = time.time() if now is None else now, time.monotonic(), 0
        for rec in records:
            if rec.expires_at <= now:
                continue
            entry = _Entry()
            self._fill(entry, rec, mono + (rec.expires_at - now))
            entry.done.set()
            with self._lock:
                self._entries[rec.origin.lower()] = entry
            n += 1
        return n

    def _entry(self, origin: str) -> _Entry:
        mine = None
        with self._lock:
            entry = self._entries.get(origin)
            if entry is None or (entry.done.is_set() and entry.expires <= time.monotonic()):
                entry = mine = self._entries[origin] = _Entry()  # this thread loads it; others wait for it
        if mine is not None:
            try:
                self._load(origin, mine)
            finally:
                mine.done.set()
        elif not entry.done.wait(self.wait_s):
            raise FetchError("robots_unavailable", "waiting for robots.txt")
        return entry

    def _load(self, origin: str, entry: _Entry) -> None:
        started, wall = time.monotonic(), time.time()
        rec = OriginRecord(origin, "unavailable", wall, wall + self.unavailable_s, "robots.txt not read")
        entry.expires, entry.detail, entry.record = started + self.unavailable_s, rec.detail, rec
        self.fetched += 1
        r = self.fetch(origin + "/robots.txt", self.max_bytes)
        if r.ok:
            rec.status, rec.robots, rec.detail = "ok", r.data or b"", ""
        elif r.reason in ALLOW_ALL_REASONS:
            rec.status, rec.detail = "allow_all", r.reason or ""
        else:
            wait = self.unavailable_s if r.retry_after is None else min(max(r.retry_after, 1.0), self.max_age_s)
            rec.detail = f"robots.txt: {r.reason} {r.detail}".strip()
            rec.expires_at = wall + wait
        if rec.status != "unavailable":
            rec.expires_at = wall + self.max_age_s
            if self.tdmrep:
                t = self.fetch(origin + TDMREP_PATH, MAX_TDMREP_BYTES)
                rec.tdmrep = t.data if t.ok else None
        self._fill(entry, rec, started + (rec.expires_at - wall))

    def _fill(self, entry: _Entry, rec: OriginRecord, expires: float) -> None:
        """Set ``entry`` from ``rec``: rules, tdmrep, expiry, and the host's Crawl-delay."""
        entry.record, entry.expires, entry.detail = rec, expires, rec.detail
        entry.rules = (RobotsRules.from_bytes(rec.robots or b"") if rec.status == "ok"
                       else ALLOW_ALL if rec.status == "allow_all" else None)
        entry.tdmrep = TdmRep.from_bytes(rec.tdmrep) if rec.tdmrep is not None else None
        if entry.rules is not None and rec.status == "ok":
            host = urlsplit(rec.origin).hostname or ""
            delay = entry.rules.crawl_delay(self.agent) or 0.0
            with self._lock:
                if delay or host in self._delays:
                    self._delays[host] = max(delay, self._delays.get(host, 0.0))


def origin_of(url: str) -> str:
    """scheme://host[:port] of a URL, lower-cased: the unit robots.txt and tdmrep.json apply to."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
