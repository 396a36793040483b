"""The safe image fetcher (on ``requests``): what img2dataset's urllib fetcher does, minus its holes.

Every hop of a fetch is checked before any byte leaves: http(s) only (``filters.url_safety``), and
the host's addresses are resolved and *all* of them checked (loopback, private, link-local,
multicast, reserved … are refused unless the host or host:port is in ``allow_hosts``). The socket
then connects to the address that was checked, inside urllib3's own connection object, so a DNS
answer that changes between check and connect (DNS rebinding) cannot redirect it; the Host header
and TLS SNI/certificate checks keep the real host name.

Each attempt has one deadline for DNS, connect, redirects, headers and every body read: a
watchdog thread shuts the socket down when it passes, so a server that drips one byte every
half second cannot hold a thread. Bodies are streamed with a byte cap; redirects are followed by
hand (each hop re-checked, at most ``max_redirects``); 5xx and timeouts are retried with backoff.
``X-Robots-Tag`` opt-outs are honoured like img2dataset does, and robots.txt optionally.

Failure reasons are a fixed vocabulary (``REASONS``), never exception strings.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
import urllib.robotparser
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from filters.url_safety import check_url, host_allowed, is_blocked_ip

# The fixed vocabulary of fetch failures (download adds the image ones, see pipeline/download.py).
REASONS = (
    "bad_url", "url_too_long", "userinfo", "blocked_scheme", "blocked_address", "too_many_redirects",
    "http_404", "http_4xx", "http_5xx", "http_other", "timeout", "connection_error", "too_large",
    "opted_out", "robots_disallowed",
)
# Failures worth trying again later (`wit download --retry-failed`); retried inline: RETRY_NOW.
TRANSIENT = frozenset({"timeout", "http_5xx", "connection_error"})
RETRY_NOW = frozenset({"timeout", "http_5xx"})
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
CHUNK = 64 * 1024


@dataclass
class FetchResult:
    url: str
    data: bytes | None = None
    reason: str | None = None  # None = fetched
    http_status: int | None = None
    final_url: str | None = None
    detail: str = ""  # for logs only
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.reason is None


class FetchError(Exception):
    """A fetch failed for ``reason`` (one of REASONS)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


# --- the deadline of one attempt, and the watchdog that enforces it -------------------------------


class _Attempt:
    """One attempt's deadline and policy, seen by the connections opened for it (thread-local)."""

    def __init__(self, deadline: float, allow_hosts: tuple[str, ...]):
        self.deadline = deadline
        self.allow_hosts = allow_hosts
        self.socks: list[socket.socket] = []
        self.fired = False
        self.lock = threading.Lock()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self.lock:
            if self.fired:
                _shutdown(sock)
            elif sock not in self.socks:
                self.socks.append(sock)

    def fire(self) -> None:
        with self.lock:
            self.fired = True
            for s in self.socks:
                _shutdown(s)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Watchdog:
    """One daemon thread per process that fires attempts whose deadline passed."""

    def __init__(self):
        self._heap: list[tuple[float, int, _Attempt]] = []
        self._cv = threading.Condition()
        self._ids = itertools.count()
        self._pid = -1

    def add(self, att: _Attempt) -> None:
        with self._cv:
            if self._pid != os.getpid():  # first use in this process (also after a fork)
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="fetch-watchdog", daemon=True).start()
            heapq.heappush(self._heap, (att.deadline, next(self._ids), att))
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, att = heapq.heappop(self._heap)
                    att.fire()
                timeout = self._heap[0][0] - now if self._heap else None
                self._cv.wait(timeout)


_WATCHDOG = _Watchdog()
_local = threading.local()
_dns_pool: ThreadPoolExecutor | None = None
_dns_pid = -1
_dns_lock = threading.Lock()


def _current() -> _Attempt:
    att = getattr(_local, "attempt", None)
    # A connection opened outside a fetch gets the strictest policy and a short deadline.
    return att if att is not None else _Attempt(time.monotonic() + 10.0, ())


DNS_TTL_S = 60.0  # answers are reused this long (each use is vetted again; the socket connects to the vetted address)
_dns_cache: dict[tuple[str, int], tuple[float, list[str]]] = {}


def resolve(host: str, port: int, timeout: float) -> list[str]:
    """All addresses of ``host`` (getaddrinfo, bounded by ``timeout``: the C resolver has none).

    Answers are cached per process for DNS_TTL_S: a shard fetches many images from one host, and a
    lookup through the resolver thread costs more CPU than the rest of opening a connection."""
    now = time.monotonic()
    hit = _dns_cache.get((host, port))
    if hit is not None and hit[0] > now:
        return hit[1]
    ips = _lookup(host, port, timeout)
    if len(_dns_cache) >= 100_000:
        _dns_cache.clear()
    _dns_cache[(host, port)] = (now + DNS_TTL_S, ips)
    return ips


def _lookup(host: str, port: int, timeout: float) -> list[str]:
    global _dns_pool, _dns_pid
    with _dns_lock:
        if _dns_pool is None or _dns_pid != os.getpid():
            _dns_pool, _dns_pid = ThreadPoolExecutor(max_workers=16, thread_name_prefix="dns"), os.getpid()
        pool = _dns_pool
    fut = pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = fut.result(timeout=max(timeout, 0.001))
    except FutureTimeout:
        raise TimeoutError(f"DNS lookup of {host} timed out") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def vetted_addresses(host: str, port: int, allow_hosts: tuple[str, ...], timeout: float) -> list[str]:
    """The addresses to connect to, all checked; FetchError("blocked_address") if any is unsafe."""
    ips = resolve(host, port, timeout)
    if not host_allowed(host, port, allow_hosts):
        bad = [ip for ip in ips if is_blocked_ip(ip)]
        if bad:
            raise FetchError("blocked_address", f"{host} resolves to {bad[0]}")
    return ips


class _GuardedConnectionMixin:
    """urllib3 connection that connects only to vetted addresses, within the attempt's deadline."""

    def _new_conn(self) -> socket.socket:
        att = _current()
        remaining = att.remaining()
        if remaining <= 0:
            raise ConnectTimeoutError(self, f"deadline passed before connecting to {self.host}")
        try:
            ips = vetted_addresses(self._dns_host, self.port, att.allow_hosts, remaining)
        except socket.gaierror as e:
            raise NameResolutionError(self.host, self, e) from e
        except TimeoutError as e:
            raise ConnectTimeoutError(self, str(e)) from e
        err: OSError | None = None
        for ip in ips:
            timeout = min(att.remaining(), self.timeout) if isinstance(self.timeout, (int, float)) else att.remaining()
            if timeout <= 0:
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out")
            try:
                sock = urllib3.util.connection.create_connection(
                    (ip, self.port), timeout, source_address=self.source_address, socket_options=self.socket_options
                )
            except TimeoutError as e:
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out") from e
            except OSError as e:
                err = e
                continue
            att.watch(sock)
            return sock
        raise NewConnectionError(self, f"Failed to establish a new connection: {err}")

    def request(self, *args, **kwargs):  # a pooled connection reused by a new attempt
        _current().watch(self.sock)
        return super().request(*args, **kwargs)


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """requests adapter whose pools use the guarded connections (per-host keep-alive pooling kept)."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}

    def proxy_manager_for(self, *args, **kwargs):
        raise FetchError("connection_error", "proxies are not supported by the safe fetcher")


# --- X-Robots-Tag and robots.txt ------------------------------------------------------------------


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


class RobotsCache:
    """robots.txt per scheme://host:port, fetched once (RFC 9309: 4xx → allow all; 5xx/unreachable → disallow)."""

    def __init__(self, fetcher: Fetcher):
        self.fetcher = fetcher
        self._lock = threading.Lock()
        self._rules: dict[str, urllib.robotparser.RobotFileParser | bool | threading.Event] = {}

    def allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        with self._lock:
            got = self._rules.get(origin)
            if got is None:  # this thread loads it; others wait on the event
                self._rules[origin] = loading = threading.Event()
        if isinstance(got, threading.Event):
            got.wait(self.fetcher.timeout_s * 2)
            return self.allowed(url) if got.is_set() else False
        if got is None:
            rules: urllib.robotparser.RobotFileParser | bool = False
            try:
                rules = self._load(origin)
            finally:
                with self._lock:
                    self._rules[origin] = rules
                loading.set()
            got = rules
        return got if isinstance(got, bool) else got.can_fetch(self.fetcher.ua_token, url)

    def _load(self, origin: str) -> urllib.robotparser.RobotFileParser | bool:
        r = self.fetcher.fetch_once(origin + "/robots.txt", max_bytes=512 * 1024, robots=False)
        if r.ok:
            parser = urllib.robotparser.RobotFileParser()
            parser.parse(r.data.decode("utf-8", "replace").splitlines())
            return parser
        return r.reason in ("http_404", "http_4xx")


# --- the fetcher ----------------------------------------------------------------------------------


@dataclass
class Fetcher:
    """Fetch image bytes safely; thread-safe (one requests.Session per thread for keep-alive pools).

    Build it from the run config with ``Fetcher.from_config(cfg.download)``.
    """

    timeout_s: float = 10.0
    max_bytes: int = 20_000_000
    max_redirects: int = 5
    retries: int = 2
    backoff_s: float = 0.25
    user_agent: str = "wit-builder/0.1"
    allow_hosts: tuple[str, ...] = ()
    opt_out_directives: frozenset[str] = frozenset({"noai", "noimageai", "noindex", "noimageindex"})
    respect_robots_txt: bool = False
    max_url_length: int = 4096
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _sessions: list = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        self.allow_hosts = tuple(self.allow_hosts)
        self.opt_out_directives = frozenset(d.strip().lower() for d in self.opt_out_directives)
        self.ua_token = user_agent_token(self.user_agent)
        self.robots = RobotsCache(self) if self.respect_robots_txt else None

    @classmethod
    def from_config(cls, dl) -> Fetcher:
        """From a pipeline.config.DownloadConfig."""
        ua = dl.user_agent + (f" (+{dl.contact_url})" if dl.contact_url else "")
        return cls(
            timeout_s=dl.timeout_s, max_bytes=dl.max_bytes, max_redirects=dl.max_redirects, retries=dl.retries,
            user_agent=ua, allow_hosts=tuple(dl.allow_hosts),
            opt_out_directives=frozenset(dl.disallowed_header_directives), respect_robots_txt=dl.respect_robots_txt,
        )

    def session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            with self._lock:
                self._sessions.append(s)
            s.trust_env = False  # no proxies or .netrc from the environment
            adapter = GuardedAdapter(pool_connections=32, pool_maxsize=2, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            s.headers.update({"User-Agent": self.user_agent, "Accept": "image/*,*/*;q=0.5", "Accept-Encoding": "identity"})
            self._local.session = s
        return s

    def close(self) -> None:
        """Close every thread's session (their pooled connections)."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for s in sessions:
            s.close()

    def fetch(self, url: str) -> FetchResult:
        """Fetch ``url`` with retries (5xx and timeouts only, exponential backoff)."""
        result = FetchResult(url)
        for attempt in range(self.retries + 1):
            result = self.fetch_once(url)
            result.attempts = attempt + 1
            if result.reason not in RETRY_NOW or attempt == self.retries:
                break
            time.sleep(self.backoff_s * 2**attempt)
        return result

    def fetch_once(self, url: str, max_bytes: int | None = None, robots: bool = True) -> FetchResult:
        """One attempt: every hop checked, one deadline for all of it."""
        att = _Attempt(time.monotonic() + self.timeout_s, self.allow_hosts)
        outer = getattr(_local, "attempt", None)
        result = FetchResult(url)
        try:
            _local.attempt = att
            _WATCHDOG.add(att)
            result = self._follow(url, att, max_bytes or self.max_bytes, robots)
        except FetchError as e:
            result.reason, result.detail = e.reason, e.detail
        except requests.exceptions.Timeout as e:
            result.reason, result.detail = "timeout", str(e)
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema,
                urllib3.exceptions.LocationParseError, UnicodeError) as e:
            result.reason, result.detail = "bad_url", str(e)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as e:
            result.reason, result.detail = "connection_error", f"{type(e).__name__}: {e}"
        finally:
            _local.attempt = outer
            with att.lock:
                fired = att.fired
                att.socks.clear()
        if fired and result.reason in (None, "connection_error"):
            # The watchdog shut the socket: whatever broke or ended early did so because of the deadline.
            result.reason, result.data = "timeout", None
        return result

    def _follow(self, url: str, att: _Attempt, max_bytes: int, robots: bool) -> FetchResult:
        session = self.session()
        headers = session.headers
        current = url
        for hop in range(self.max_redirects + 2):
            reason = check_url(current, self.max_url_length, self.allow_hosts)
            if reason:
                raise FetchError(reason, current)
            if robots and self.robots is not None:
                _local.attempt = None  # robots.txt has its own attempt and deadline
                try:
                    ok = self.robots.allowed(current)
                finally:
                    _local.attempt = att
                if not ok:
                    raise FetchError("robots_disallowed", current)
            remaining = att.remaining()
            if remaining <= 0:
                raise FetchError("timeout", "deadline passed")
            # Straight to the thread's adapter: Session.request's merging of environment settings,
            # cookies and hooks cost more CPU than the rest of a fetch and are not wanted here.
            request = requests.PreparedRequest()
            request.prepare(method="GET", url=current, headers=headers, hooks={})
            resp = session.get_adapter(current).send(request, stream=True, timeout=(remaining, remaining))
            try:
                att.watch(getattr(getattr(resp.raw, "connection", None), "sock", None))
                status = resp.status_code
                if status in REDIRECT_CODES:
                    location = resp.headers.get("Location")
                    if not location:
                        raise FetchError("http_other", f"{status} without Location")
                    if hop >= self.max_redirects:
                        raise FetchError("too_many_redirects", current)
                    parts = urlsplit(urljoin(current, location.strip()))
                    current = urlunsplit(parts._replace(fragment=""))
                    continue
                return self._read(url, current, resp, att, max_bytes)
            finally:
                resp.close()
        raise FetchError("too_many_redirects", current)

    def _read(self, url: str, final_url: str, resp: requests.Response, att: _Attempt, max_bytes: int) -> FetchResult:
        status = resp.status_code
        if status in (404, 410):
            raise FetchError("http_404", str(status))
        if 400 <= status < 500:
            raise FetchError("http_4xx", str(status))
        if status >= 500:
            raise FetchError("http_5xx", str(status))
        if not 200 <= status < 300:
            raise FetchError("http_other", str(status))
        if self.opt_out_directives and is_opted_out(
            resp.raw.headers.getlist("X-Robots-Tag"), self.ua_token, self.opt_out_directives
        ):
            raise FetchError("opted_out", "X-Robots-Tag")
        declared = resp.headers.get("Content-Length", "")
        if declared.strip().isdigit() and int(declared) > max_bytes:
            raise FetchError("too_large", f"Content-Length {declared}")
        buf = bytearray()
        for chunk in resp.iter_content(CHUNK):
            buf += chunk
            if len(buf) > max_bytes:
                raise FetchError("too_large", f"over {max_bytes} bytes")
            if att.remaining() <= 0:
                raise FetchError("timeout", "deadline passed while reading")
        return FetchResult(url, bytes(buf), None, status, final_url)
