"""Opt-outs: img2dataset's ``X-Robots-Tag`` rule (``is_opted_out``), and robots.txt (``RobotsCache``).

robots.txt, when ``respect_robots_txt`` is on, is fetched once per host by each Fetcher (i.e. per
task) and shared by its threads; an unreachable robots.txt fails the URL with its transient reason and
is asked again by the next URL. The host's address is checked before robots.txt is asked, so an
attack on a forbidden address is recorded as the attack.
"""

from __future__ import annotations

import threading
import urllib.robotparser
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pipeline.fetch.outcome import TRANSIENT, FetchError, FetchResult

if TYPE_CHECKING:
    from pipeline.fetch.fetcher import Fetcher


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


class _Loading:
    """robots.txt being fetched by one thread; the others wait for its outcome."""

    def __init__(self):
        self.done = threading.Event()
        self.outcome: urllib.robotparser.RobotFileParser | bool | FetchResult = False


class RobotsCache:
    """robots.txt per scheme://host:port, fetched once (RFC 9309: 4xx → allow all; other failures →
    fetch nothing). A transient failure (timeout, 5xx, unreachable, rate-limited) is not kept: the
    URL fails with that reason, retryable, and the next URL of the host asks again."""

    def __init__(self, fetcher: Fetcher):
        self.fetcher = fetcher
        self._lock = threading.Lock()
        self._rules: dict[str, urllib.robotparser.RobotFileParser | bool | _Loading] = {}

    def allowed(self, url: str) -> bool:
        """Whether robots.txt lets us fetch ``url``; FetchError when robots.txt could not be read."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        mine = None
        with self._lock:
            got = self._rules.get(origin)
            if got is None:  # this thread loads it; others wait for it
                got = mine = self._rules[origin] = _Loading()
        if mine is not None:
            try:
                mine.outcome = self._load(origin)
            finally:
                with self._lock:
                    if isinstance(mine.outcome, FetchResult):
                        del self._rules[origin]
                    else:
                        self._rules[origin] = mine.outcome
                mine.done.set()
        if isinstance(got, _Loading):
            if not got.done.wait(self.fetcher.timeout_s * 2):
                raise FetchError("timeout", "waiting for robots.txt")
            got = got.outcome
        if isinstance(got, FetchResult):
            raise FetchError(got.reason, f"robots.txt: {got.detail}", got.retry_after)
        return got if isinstance(got, bool) else got.can_fetch(self.fetcher.ua_token, url)

    def _load(self, origin: str) -> urllib.robotparser.RobotFileParser | bool | FetchResult:
        r = self.fetcher.fetch_once(origin + "/robots.txt", max_bytes=512 * 1024, robots=False)
        if r.ok:
            parser = urllib.robotparser.RobotFileParser()
            parser.parse(r.data.decode("utf-8", "replace").splitlines())
            return parser
        if r.reason in TRANSIENT:
            return r
        return r.reason in ("http_404", "http_4xx")
