"""The fetcher: ``Fetcher.fetch_once`` makes one attempt at a URL, ``fetch`` and ``fetch_all`` run
attempts through the host scheduler (``pipeline.fetch.hosts``), which gets ``fetch_once`` and the
fetcher's ``Politeness`` and nothing else.

An attempt checks every hop before any byte leaves (http(s) only, ``pipeline.fetch.url_safety``;
addresses in ``pipeline.fetch.guarded``), follows redirects by hand (each hop re-checked, at most
``max_redirects``), asks robots.txt when on (``pipeline.fetch.robots``) and streams the body with a
byte cap, all within one deadline. Whatever goes wrong ends as one of ``REASONS``.

What a caller other than the image download wants is said with public settings, never by
overriding the fetcher: ``accept`` (the Accept header), ``check_response`` (a look at a 2xx's
status and headers before its body is read, e.g. the crawler's "HTML only"), ``follow_redirects``.
A 2xx result keeps its status line and headers (the crawler writes them to its WARC).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import urllib3

from pipeline.fetch.consent import AI_TOKENS, header_opt_out, tdmrep_opt_out
from pipeline.fetch.dns import resolver_for
from pipeline.fetch.guarded import WATCHDOG, AllowList, Attempt, GuardedAdapter, this_thread, vetted_addresses
from pipeline.fetch.hosts import HostScheduler, Politeness, host_key, retry_after_seconds, task_host_cap
from pipeline.fetch.outcome import FetchError, FetchResult
from pipeline.fetch.robots import MAX_ROBOTS_BYTES, ROBOTS_REDIRECTS, RobotsCache
from pipeline.fetch.robots_rules import product_token
from pipeline.fetch.url_safety import ascii_url, check_url, split_url
from pipeline.rules import MAX_URL_LENGTH

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
CHUNK = 64 * 1024
HOST_POOLS = 128  # keep-alive pools kept per Fetcher (least recently used hosts' idle connections are closed)


@dataclass
class Fetcher:
    """Fetch image bytes safely; thread-safe (one requests.Session whose pools keep per-host keep-alive
    connections). ``fetch`` fetches one URL; ``fetch_all`` many, host by host (``HostScheduler``).

    Build it from the run config with ``Fetcher.from_config(cfg.download, cfg.robots)``.
    """

    timeout_s: float = 10.0
    max_bytes: int = 20_000_000
    max_redirects: int = 5
    follow_redirects: bool = True  # False: a 3xx ends as "redirected", its target as the detail
    retries: int = 2
    backoff_s: float = 0.25
    user_agent: str = "wit-builder/0.1"
    allow_hosts: tuple[str, ...] = ()
    # X-Robots-Tag directives that opt an image out (img2dataset's list); empty: the header is not read
    opt_out_directives: frozenset[str] = frozenset({"noai", "noimageai", "noindex", "noimageindex"})
    respect_robots_txt: bool = False
    ai_tokens: tuple[str, ...] = AI_TOKENS  # robots.txt groups naming these opt out (with respect_robots_txt)
    tdmrep: bool = True  # TDMRep: tdmrep.json per origin (with respect_robots_txt), tdm-reservation header
    max_url_length: int = MAX_URL_LENGTH
    host_connections: int = 2
    host_slots: Any = None  # a HostSlots shared with the other tasks on this machine (pipeline.fetch.slots)
    host_min_interval_s: float = 0.0
    host_failure_limit: int = 3
    max_crawl_delay_s: float = 10.0  # a robots.txt Crawl-delay raises its host's interval up to this
    delay_factor: float = 0.0  # adaptive politeness: a host's interval ≥ this × its response time (0: off)
    robots_max_age_s: float = 86_400.0  # a fetched robots.txt is used this long (RFC 9309: at most 24 h)
    robots_unavailable_s: float = 600.0  # an unreachable robots.txt (5xx, 429, network) disallows this long
    robots_max_bytes: int = MAX_ROBOTS_BYTES  # parsed up to this
    dns_servers: tuple[str, ...] = ()
    dns_negative_ttl_s: float = 30.0
    accept: str = "image/*,*/*;q=0.5"
    check_response: Callable[[requests.Response], None] | None = None  # a 2xx before its body; may raise FetchError
    _session: requests.Session | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        self.allow_hosts = tuple(self.allow_hosts)
        self.allow = AllowList(self.allow_hosts)
        self.dns_servers = tuple(self.dns_servers)
        self.opt_out_directives = frozenset(d.strip().lower() for d in self.opt_out_directives)
        self.ai_tokens = tuple(self.ai_tokens)
        self.ua_token = product_token(self.user_agent)
        self.robots = RobotsCache(
            self.read_side_file, self.ua_token, max_age_s=self.robots_max_age_s,
            unavailable_s=self.robots_unavailable_s, max_bytes=self.robots_max_bytes, wait_s=2 * self.timeout_s,
            ai_tokens=self.ai_tokens, tdmrep=self.tdmrep,
        ) if self.respect_robots_txt else None
        self.resolver = resolver_for(self.dns_servers, self.dns_negative_ttl_s, self.timeout_s)
        # the pace of every host this fetcher asked, kept from one fetch_all to the next (the crawler's parts)
        self.politeness = Politeness(
            connections=self.host_connections, min_interval_s=self.host_min_interval_s,
            max_crawl_delay_s=self.max_crawl_delay_s, failure_limit=self.host_failure_limit, retries=self.retries,
            backoff_s=self.backoff_s, budget_s=self.timeout_s * (self.retries + 1), delay_factor=self.delay_factor,
            delay_of=self.robots.crawl_delay if self.robots is not None else None,
        )

    @classmethod
    def from_config(cls, dl, robots=None, host_slots=None, **overrides) -> Fetcher:
        """From a pipeline.config.DownloadConfig and RobotsConfig; ``overrides`` set any other field (the
        crawler's). The per-host cap: with ``host_slots`` (the job's, shared by the tasks on this machine)
        the whole job's, each request holding one of its host's slots; else this task's static share of
        the job's (``task_host_cap``). ``download.consent`` off switches off robots.txt, tdmrep.json and
        the opt-out headers together."""
        cap = (host_slots.per_host if host_slots is not None
               else task_host_cap(dl.host_connections, dl.job_host_connections, dl.concurrent_tasks))
        ua = dl.user_agent + (f" (+{dl.contact_url})" if dl.contact_url else "")
        settings = dict(
            timeout_s=dl.timeout_s, max_bytes=dl.max_bytes, max_redirects=dl.max_redirects, retries=dl.retries,
            user_agent=ua, allow_hosts=tuple(dl.allow_hosts), respect_robots_txt=dl.consent, tdmrep=dl.consent,
            opt_out_directives=frozenset(dl.disallowed_header_directives if dl.consent else ()),
            ai_tokens=tuple(dl.ai_tokens if dl.honour_ai_tokens else ()),
            host_connections=cap, host_slots=host_slots,
            host_min_interval_s=dl.host_min_interval_s, host_failure_limit=dl.host_failure_limit,
            dns_servers=tuple(dl.dns_servers), dns_negative_ttl_s=dl.dns_negative_ttl_s,
        )
        if robots is not None:
            settings.update(robots_max_age_s=robots.max_age_s, robots_unavailable_s=robots.unavailable_s,
                            robots_max_bytes=robots.max_bytes, max_crawl_delay_s=robots.max_crawl_delay_s)
        return cls(**{**settings, **overrides})

    def session(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                s = requests.Session()
                s.trust_env = False  # no proxies or .netrc from the environment
                # One pool per host, shared by the threads: the scheduler keeps at most host_connections
                # requests running per host, so the pool never holds more connections than that.
                adapter = GuardedAdapter(pool_connections=HOST_POOLS, pool_maxsize=self.host_connections, max_retries=0)
                s.mount("http://", adapter)
                s.mount("https://", adapter)
                s.headers.update({"User-Agent": self.user_agent, "Accept": self.accept,
                                  "Accept-Encoding": "identity"})
                self._session = s
            return self._session

    def close(self) -> None:
        """Close the pooled connections."""
        with self._lock:
            s, self._session = self._session, None
        if s is not None:
            s.close()

    def fetch(self, url: str) -> FetchResult:
        """Fetch one URL: retries of 5xx and timeouts with exponential backoff, 429/Retry-After waits."""
        scheduler = HostScheduler(self.fetch_once, self.politeness, failure_limit=0,  # one URL: no circuit to open
                                  slots=self.host_slots)
        out: list = []
        scheduler.load([url], lambda u: u)
        scheduler.work(None, out.append)
        return out[0][1]

    def fetch_all(self, items: Iterable, url_of: Callable[[Any], str] = lambda u: u, threads: int = 16,
                  process: Callable[[Any, FetchResult], Any] | None = None) -> Iterator[tuple[Any, Any]]:
        """Fetch every item's URL on ``threads`` threads, host by host; yields (item, result) as they
        finish, where result is ``process(item, fetch_result)`` (run in the fetch thread, after the
        host's connection is free) or the FetchResult itself. At most 2×threads results wait."""
        scheduler = HostScheduler(self.fetch_once, self.politeness, slots=self.host_slots)
        scheduler.load(items, url_of)
        return scheduler.run(threads, process)

    def read_side_file(self, url: str, max_bytes: int | None = None) -> FetchResult:
        """One attempt at a file the crawler reads for itself (robots.txt, a sitemap): redirects followed
        (at least 5, RFC 9309), no robots.txt asked, no opt-out header judged, the body cut at
        ``max_bytes`` rather than refused."""
        return self.fetch_once(url, max_bytes, side_file=True)

    def fetch_once(self, url: str, max_bytes: int | None = None, side_file: bool = False) -> FetchResult:
        """One attempt: every hop checked, one deadline for all of it."""
        att = Attempt(time.monotonic() + self.timeout_s, self.allow, self.resolver)
        outer = getattr(this_thread, "attempt", None)
        result = FetchResult(url)
        try:
            this_thread.attempt = att
            WATCHDOG.add(att)
            result = self._follow(url, att, max_bytes or self.max_bytes, side_file)
        except FetchError as e:
            result.reason, result.detail, result.retry_after = e.reason, e.detail, e.retry_after
        except requests.exceptions.Timeout as e:
            result.reason, result.detail = "timeout", str(e)
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema,
                urllib3.exceptions.LocationParseError, UnicodeError) as e:
            result.reason, result.detail = "bad_url", str(e)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as e:
            result.reason, result.detail = "connection_error", f"{type(e).__name__}: {e}"
        finally:
            this_thread.attempt = outer
            with att.lock:
                fired = att.fired
                att.socks.clear()
        if fired and result.reason in (None, "connection_error"):
            # The watchdog shut the socket: whatever broke or ended early did so because of the deadline.
            result.reason, result.data = "timeout", None
        if result.reason is not None:
            result.http_status = att.status
        result.connected = att.connected
        return result

    def _vet_host(self, url: str, att: Attempt) -> None:
        """Resolve and check the URL's host now (before robots.txt is asked): the address is the reason."""
        parts = split_url(url)
        if isinstance(parts, str):
            raise FetchError(parts, url)
        try:
            vetted_addresses(parts[1], parts[2], att.allow.for_host(parts[1]), att.remaining(), att.resolver)
        except socket.gaierror as e:
            raise FetchError("connection_error", f"{parts[1]}: {e}") from None
        except TimeoutError as e:
            raise FetchError("timeout", str(e)) from None

    def _follow(self, url: str, att: Attempt, max_bytes: int, side_file: bool) -> FetchResult:
        session = self.session()
        headers = session.headers
        current = url
        max_redirects = max(self.max_redirects, ROBOTS_REDIRECTS) if side_file else self.max_redirects
        for hop in range(max_redirects + 2):
            reason = check_url(current, self.max_url_length, self.allow.for_host(host_key(current)))
            if reason:
                raise FetchError(reason, current)
            current = ascii_url(current)  # the name IDNA maps it to is the one checked and asked
            if not side_file and self.robots is not None:
                self._vet_host(current, att)
                this_thread.attempt = None  # robots.txt has its own attempt and deadline
                try:
                    self.robots.check(current)  # FetchError: robots_disallowed, robots_unavailable
                finally:
                    this_thread.attempt = att
            remaining = att.remaining()
            if remaining <= 0:
                raise FetchError("timeout", "deadline passed")
            # Straight to the adapter: Session.request's merging of environment settings, cookies and
            # hooks cost more CPU than the rest of a fetch and are not wanted here.
            request = requests.PreparedRequest()
            request.prepare(method="GET", url=current, headers=headers, hooks={})
            resp = session.get_adapter(current).send(request, stream=True, timeout=(remaining, remaining))
            try:
                att.watch(getattr(getattr(resp.raw, "connection", None), "sock", None))
                status = att.status = resp.status_code
                if status in REDIRECT_CODES:
                    location = resp.headers.get("Location")
                    if not location:
                        raise FetchError("http_other", f"{status} without Location")
                    try:  # http.client reads headers as Latin-1; a Location is sent as UTF-8 (as requests reads it)
                        location = location.encode("latin-1").decode("utf-8")
                    except UnicodeError:
                        pass
                    try:
                        target = urlunsplit(urlsplit(urljoin(current, location.strip()))._replace(fragment=""))
                    except ValueError:
                        raise FetchError("bad_url", f"{status} to {location!r}") from None
                    _drain(resp, att)
                    if not (self.follow_redirects or side_file):  # the caller decides (the crawler queues it)
                        raise FetchError("redirected", target)
                    if hop >= max_redirects:
                        raise FetchError("too_many_redirects", current)
                    current = target
                    continue
                return self._read(url, current, resp, att, max_bytes, side_file)
            finally:
                resp.close()
        raise FetchError("too_many_redirects", current)

    def _read(self, url: str, final_url: str, resp: requests.Response, att: Attempt, max_bytes: int,
              side_file: bool) -> FetchResult:
        status = resp.status_code
        if not 200 <= status < 300:
            _drain(resp, att)
        if status in (404, 410):
            raise FetchError("http_404", str(status))
        if status == 429:
            raise FetchError("rate_limited", "429", retry_after_seconds(resp.headers.get("Retry-After")))
        if status == 503 and (wait := retry_after_seconds(resp.headers.get("Retry-After"))) is not None:
            raise FetchError("rate_limited", "503 with Retry-After", wait)
        if 400 <= status < 500:
            raise FetchError("http_4xx", str(status))
        if status >= 500:
            raise FetchError("http_5xx", str(status))
        if not 200 <= status < 300:
            raise FetchError("http_other", str(status))
        if not side_file:
            # tdm-reservation: 1, then X-Robots-Tag (urllib3's headers: repeated ones kept apart)
            reason = ((self.tdmrep and tdmrep_opt_out(final_url, None, resp.raw.headers))
                      or header_opt_out(resp.raw.headers, self.user_agent, self.ai_tokens, self.opt_out_directives))
            if reason:
                raise FetchError(reason, final_url)
            if self.check_response is not None:
                self.check_response(resp)
            declared = resp.headers.get("Content-Length", "")
            if declared.strip().isdigit() and int(declared) > max_bytes:
                raise FetchError("too_large", f"Content-Length {declared}")
        buf = bytearray()
        for chunk in resp.iter_content(CHUNK):
            buf += chunk
            if len(buf) > max_bytes:
                if side_file:  # read up to the limit (RFC 9309: a long robots.txt is parsed that far)
                    del buf[max_bytes:]
                    break
                raise FetchError("too_large", f"over {max_bytes} bytes")
            if att.remaining() <= 0:
                raise FetchError("timeout", "deadline passed while reading")
        return FetchResult(url, bytes(buf), None, status, final_url, headers=list(resp.raw.headers.items()),
                           status_line=f"{status} {resp.reason or ''}".strip(),
                           protocol="HTTP/1.0" if getattr(resp.raw, "version", 11) == 10 else "HTTP/1.1")


def _drain(resp: requests.Response, att: Attempt, limit: int = CHUNK) -> None:
    """Read a small unwanted body (an error page, a redirect's) so the connection goes back to its pool
    instead of being closed: a 429 then costs the host no new connection."""
    declared = resp.headers.get("Content-Length", "")
    if not declared.strip().isdigit() or int(declared) > limit:
        return
    try:
        for _ in resp.iter_content(CHUNK):
            if att.remaining() <= 0:
                return
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError):
        pass

