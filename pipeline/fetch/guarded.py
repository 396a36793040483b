"""Safe connections: every address checked, one deadline per attempt.

**Safety.** The host's addresses are resolved and *all* of them checked (loopback, private,
link-local, multicast, reserved … are refused unless the host or host:port is in ``allow_hosts``).
The socket then connects to the address that was checked, inside urllib3's own connection object
(``GuardedAdapter``), so a DNS answer that changes between check and connect (DNS rebinding) cannot
redirect it; the Host header and TLS SNI/certificate checks keep the real host name.

**Deadlines.** Each attempt (``Attempt``) has one deadline for DNS, connect, redirects, headers and
every body read: a watchdog thread shuts the attempt's sockets down when it passes, so a server that
drips one byte every half second cannot hold a thread. The connections find the attempt they serve
in ``this_thread.attempt`` (set by ``Fetcher.fetch_once``).
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterable

import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from pipeline.fetch.dns import Resolver, default_resolver
from pipeline.fetch.outcome import FetchError
from pipeline.fetch.url_safety import host_allowed, is_blocked_ip

# --- the deadline of one attempt, and the watchdog that enforces it -------------------------------


class Attempt:
    """One attempt's deadline and policy, seen by the connections opened for it (thread-local)."""

    def __init__(self, deadline: float, allow: AllowList | None = None, resolver: Resolver | None = None):
        self.deadline = deadline
        self.allow = allow or _NO_ALLOW
        self.resolver = resolver or default_resolver()
        self.status: int | None = None  # the last status line received
        self.connected = False  # a connection to the host was open (the host was reached)
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
        self._heap: list[tuple[float, int, Attempt]] = []
        self._cv = threading.Condition()
        self._ids = itertools.count()
        self._pid = -1

    def add(self, att: Attempt) -> None:
        with self._cv:
            if self._pid != os.getpid():  # first use in this process (also after a fork)
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="fetch-watchdog", daemon=True).start()
            heapq.heappush(self._heap, (att.deadline, next(self._ids), att))
            if self._heap[0][2] is att:  # the earliest deadline now: the thread sleeps until a later one
                self._cv.notify()  # (else it would wake for nothing: a context switch per attempt)

    def _run(self) -> None:
        while True:
            with self._cv:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, att = heapq.heappop(self._heap)
                    att.fire()
                timeout = self._heap[0][0] - now if self._heap else None
                self._cv.wait(timeout)


WATCHDOG = _Watchdog()
this_thread = threading.local()  # .attempt: the attempt this thread's connections serve (None: outside a fetch)


def _current() -> Attempt:
    att = getattr(this_thread, "attempt", None)
    # A connection opened outside a fetch gets the strictest policy and a short deadline.
    return att if att is not None else Attempt(time.monotonic() + 10.0)


class AllowList:
    """``allow_hosts`` indexed by host: ``for_host(h)`` is the entries that can match ``h``, so that
    ``host_allowed(h, port, for_host(h))`` answers as on the whole list, and a list of thousands of
    hosts costs nothing per URL."""

    def __init__(self, entries: Iterable[str] = ()):
        self.entries = tuple(entries)
        self._by_host: dict[str, list[str]] = {}
        for e in self.entries:
            low = e.lower().strip()
            for key in {low, low.rpartition(":")[0].strip("[]")} - {""}:  # host_allowed's two rules
                self._by_host.setdefault(key, []).append(e)

    def for_host(self, host: str) -> list[str]:
        return self._by_host.get(host.lower().strip("[]"), [])


_NO_ALLOW = AllowList()


# --- checked addresses, and the connections that use only them ------------------------------------


def vetted_addresses(host: str, port: int, allow_hosts: Iterable[str], timeout: float,
                     resolver: Resolver | None = None) -> list[str]:
    """The addresses to connect to, all checked; FetchError("blocked_address") if any is unsafe."""
    ips = (resolver or default_resolver()).resolve(host, port, timeout)
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
            ips = vetted_addresses(self._dns_host, self.port, att.allow.for_host(self._dns_host), remaining,
                                   att.resolver)
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
            att.connected = True
            return sock
        raise NewConnectionError(self, f"Failed to establish a new connection: {err}")

    def request(self, *args, **kwargs):  # a pooled connection reused by a new attempt
        att = _current()
        att.watch(self.sock)
        if self.sock is not None:
            att.connected = True
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
