"""Opt-outs: img2dataset's ``X-Robots-Tag`` rule (``is_opted_out``), and robots.txt (``RobotsCache``).

**Fetching robots.txt (RFC 9309 §2.3).** When ``respect_robots_txt`` is on, each origin's robots.txt
is fetched once by a fetcher (i.e. per task) and shared by its threads, through a fetch callable (the
fetcher's ``read_side_file``: redirects followed, at least 5; no opt-out header judged, so a 2xx is
parsed whatever ``X-Robots-Tag`` it carries; the body cut at ``max_bytes``, at least 500 KiB, and
parsed that far). What the answer means, and how long it is kept:

- 2xx: its rules, for ``max_age_s`` (at most 24 h);
- 4xx other than 429 (and more redirects than followed): no robots.txt, every URL allowed, as long;
- 5xx, 429, a network failure or an unsafe redirect: the site may not be crawled (a complete
  disallow); its URLs fail as ``robots_unavailable`` (transient: ``--retry-failed`` asks again)
  without a request, for ``unavailable_s`` or the ``Retry-After`` the answer asked for.

A URL its rules disallow fails as ``robots_disallowed``. The host's address is checked before
robots.txt is asked (by the fetcher), so an attack on a forbidden address is recorded as the attack.

**Parsing** is behind one boundary, ``parse_robots(body) -> RobotsRules`` (``allowed(agent, url)``,
``crawl_delay(agent)``, ``sitemaps``); only it knows which parser reads the file.
"""

from __future__ import annotations

import threading
import time
import urllib.robotparser
from collections.abc import Callable
from urllib.parse import urlsplit

from pipeline.fetch.outcome import FetchError, FetchResult

MAX_ROBOTS_BYTES = 500 * 1024  # RFC 9309 §2.5: parse at least 500 KiB
ROBOTS_REDIRECTS = 5  # RFC 9309 §2.3.1.2: follow at least five redirects
ALLOW_ALL_REASONS = frozenset({"http_404", "http_4xx", "too_many_redirects"})  # "unavailable" in RFC terms


def user_agent_token(user_agent: str) -> str:
    """The product token robots rules name us by: "wit-builder/0.1 (+url)" → "wit-builder"."""
    return user_agent.strip().split("/", 1)[0].split()[0].lower() if user_agent.strip() else ""


def is_opted_out(values: list[str], ua_token: str, directives: set[str]) -> bool:
    """img2dataset's X-Robots-Tag rule: a value "[bot:] d1, d2" opts out when it names no bot or
    our bot and lists one of ``directives`` (noai, noimageai, noindex, noimageindex)."""
    for value in values:
        parts = value.split(":", 1)
        bot = parts[0].strip().lower() if len(parts) == 2 else None
        if bot is not None and bot != ua_token:
            continue
        if any(d.strip().lower() in directives for d in parts[-1].split(",")):
            return True
    return False


# --- parsing: the one place that knows the parser ----------------------------------------------------


class RobotsRules:
    """A parsed robots.txt: which URLs an agent may fetch, its Crawl-delay, the sitemaps it names."""

    def __init__(self, parser: urllib.robotparser.RobotFileParser | None):
        self._parser = parser

    def allowed(self, agent: str, url: str) -> bool:
        return self._parser is None or self._parser.can_fetch(agent, url)

    def crawl_delay(self, agent: str) -> float:
        delay = self._parser.crawl_delay(agent) if self._parser is not None else None
        return float(delay) if delay else 0.0

    @property
    def sitemaps(self) -> list[str]:
        return list((self._parser.site_maps() if self._parser is not None else None) or [])


ALLOW_ALL = RobotsRules(None)


def parse_robots(body: bytes) -> RobotsRules:
    """The rules of a robots.txt body (already cut at the size limit; a BOM and any line end accepted)."""
    parser = urllib.robotparser.RobotFileParser()
    parser.parse(body.decode("utf-8", "replace").lstrip("\ufeff").splitlines())
    return RobotsRules(parser)


# --- fetching and caching ----------------------------------------------------------------------------


class _Entry:
    """An origin's robots.txt: its rules (``None``: unavailable, disallow all) until ``expires``."""

    __slots__ = ("rules", "expires", "detail", "done")

    def __init__(self):
        self.rules: RobotsRules | None = None
        self.expires = 0.0
        self.detail = ""
        self.done = threading.Event()  # set once loaded: until then other threads wait for it


class RobotsCache:
    """robots.txt per scheme://host:port, fetched with ``fetch(url, max_bytes) -> FetchResult`` and kept
    as the module docstring says; ``check`` judges a URL, ``crawl_delay`` and ``sitemaps`` report."""

    def __init__(self, fetch: Callable[[str, int], FetchResult], agent: str, max_age_s: float = 86_400.0,
                 unavailable_s: float = 600.0, max_bytes: int = MAX_ROBOTS_BYTES, wait_s: float = 20.0):
        self.fetch, self.agent = fetch, agent
        self.max_age_s, self.unavailable_s = min(max_age_s, 86_400.0), unavailable_s
        self.max_bytes, self.wait_s = max(max_bytes, MAX_ROBOTS_BYTES), wait_s
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._delays: dict[str, float] = {}  # host → its Crawl-delay for us (the largest of its origins')

    def check(self, url: str) -> None:
        """Return when robots.txt lets us fetch ``url``; else FetchError robots_disallowed or robots_unavailable."""
        entry = self._entry(_origin(url))
        if entry.rules is None:
            raise FetchError("robots_unavailable", entry.detail)
        if not entry.rules.allowed(self.agent, url):
            raise FetchError("robots_disallowed", url)

    def crawl_delay(self, host: str) -> float:
        return self._delays.get(host, 0.0)

    def sitemaps(self, origin: str) -> list[str]:
        """The Sitemap: lines of the origin's robots.txt (fetched now if not yet)."""
        entry = self._entry(origin.lower())
        return entry.rules.sitemaps if entry.rules is not None else []

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
        entry.expires = time.monotonic() + self.unavailable_s
        entry.detail = "robots.txt not read"
        r = self.fetch(origin + "/robots.txt", self.max_bytes)
        now = time.monotonic()
        if r.ok:
            entry.rules, entry.expires = parse_robots(r.data), now + self.max_age_s
            host = urlsplit(origin).hostname or ""
            delay = entry.rules.crawl_delay(self.agent)
            if delay or host in self._delays:
                self._delays[host] = max(delay, self._delays.get(host, 0.0))
        elif r.reason in ALLOW_ALL_REASONS:
            entry.rules, entry.expires = ALLOW_ALL, now + self.max_age_s
        else:
            wait = self.unavailable_s if r.retry_after is None else min(max(r.retry_after, 1.0), self.max_age_s)
            entry.expires, entry.detail = now + wait, f"robots.txt: {r.reason} {r.detail}".strip()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
