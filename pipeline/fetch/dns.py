"""DNS for the fetcher (``Resolver``): a lookup never waits behind another one.

Each name being looked up has its own thread, and every request waits for it only until its own
deadline (a lookup of the same name already under way is joined, not repeated). IP literals never
reach a resolver. Answers are cached per process (``DNS_TTL_S``) and failures for
``dns_negative_ttl_s``, so the URLs of a name that does not resolve, or whose DNS never answers, fail
at once after the first. The system resolver (getaddrinfo) is the default; ``dns_servers`` asks those
servers directly (A and AAAA, over UDP with TCP fallback, dnspython), each lookup bounded by
``timeout_s``. Every address a lookup returns is still vetted before a socket connects to it
(``pipeline.fetch.guarded``).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Iterable

from pipeline.fetch.url_safety import literal_ip
from pipeline.rules import split_dns_server

DNS_TTL_S = 60.0  # answers are reused this long (each use is vetted again; the socket connects to the vetted address)


class _Lookup:
    """A lookup under way: the thread that runs it fills ``ips`` or ``error``, then sets ``done``."""

    __slots__ = ("done", "ips", "error")

    def __init__(self):
        self.done = threading.Event()
        self.ips: list[str] | None = None
        self.error: tuple[str, int, str] | None = None


def _raise(error: tuple[str, int, str]):
    kind, code, message = error  # a new exception each time: one object raised in many threads shares a traceback
    if kind == "timeout":
        raise TimeoutError(message)
    raise socket.gaierror(code, message)


class Resolver:
    """Host name → addresses, cached, with one thread per name being looked up (see the module docstring).

    ``servers``: (address, port) of DNS servers to ask directly; empty = the system resolver."""

    def __init__(self, servers: Iterable[tuple[str, int]] = (), ttl_s: float = DNS_TTL_S,
                 negative_ttl_s: float = 30.0, lifetime_s: float = 10.0):
        self.servers = tuple(servers)
        self.ttl_s, self.negative_ttl_s, self.lifetime_s = ttl_s, negative_ttl_s, lifetime_s
        self._cache: dict[str, tuple[float, list[str] | None, tuple[str, int, str] | None]] = {}
        self._inflight: dict[str, _Lookup] = {}
        self._lock = threading.Lock()
        self._dns = None
        if self.servers:
            import dns.nameserver  # dnspython (absolute imports: not this module)
            import dns.resolver

            self._dns = dns.resolver.Resolver(configure=False)
            self._dns.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in self.servers]
            self._dns.cache = None  # ours caches, and also caches failures

    def resolve(self, host: str, port: int, timeout: float) -> list[str]:
        """All addresses of ``host``, waiting at most ``timeout`` s (TimeoutError); socket.gaierror
        when the name does not resolve."""
        literal = _literal(host)
        if literal is not None:
            return [literal]
        key = host.lower().rstrip(".")
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                lookup = None
            else:
                hit = None
                lookup = self._inflight.get(key)
                if lookup is None:
                    lookup = self._inflight[key] = _Lookup()
                    threading.Thread(target=self._run, args=(key, port, lookup), name=f"dns {key[:40]}",
                                     daemon=True).start()
        if hit is not None:
            if hit[2] is not None:
                _raise(hit[2])
            return hit[1]
        if not lookup.done.wait(max(timeout, 0.0)):
            raise TimeoutError(f"DNS lookup of {host} timed out")
        if lookup.error is not None:
            _raise(lookup.error)
        return lookup.ips

    def _run(self, key: str, port: int, lookup: _Lookup) -> None:
        try:
            lookup.ips = self._query(key, port)
        except TimeoutError as e:
            lookup.error = ("timeout", 0, str(e) or f"DNS lookup of {key} timed out")
        except socket.gaierror as e:
            lookup.error = ("gaierror", e.errno or socket.EAI_FAIL, e.strerror or str(e))
        except Exception as e:  # noqa: BLE001 - any resolver failure is "does not resolve", never a crash
            lookup.error = ("gaierror", socket.EAI_FAIL, f"{type(e).__name__}: {e}")
        with self._lock:
            if len(self._cache) >= 100_000:
                self._cache.clear()
            ttl = self.ttl_s if lookup.error is None else self.negative_ttl_s
            self._cache[key] = (time.monotonic() + ttl, lookup.ips, lookup.error)
            del self._inflight[key]
        lookup.done.set()

    def _query(self, host: str, port: int) -> list[str]:
        if self._dns is None:
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            return list(dict.fromkeys(info[4][0] for info in infos))
        import dns.exception
        import dns.resolver

        deadline = time.monotonic() + self.lifetime_s
        ips: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = self._dns.resolve(host, rdtype, search=False, raise_on_no_answer=False,
                                           lifetime=max(deadline - time.monotonic(), 0.001))
            except dns.resolver.NXDOMAIN:
                raise socket.gaierror(socket.EAI_NONAME, f"{host}: no such name") from None
            except dns.exception.Timeout:
                if ips:  # the A answer is enough (every address we connect to is still vetted)
                    break
                raise TimeoutError(f"DNS lookup of {host} timed out") from None
            except dns.resolver.NoNameservers as e:
                if ips:
                    break
                raise socket.gaierror(socket.EAI_AGAIN, f"{host}: {e}") from None
            ips += [r.address for r in answer.rrset or ()]
        if not ips:
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: no address")
        return list(dict.fromkeys(ips))


def _literal(host: str) -> str | None:
    """The address an IP-literal host denotes (any spelling the C resolver accepts), else None."""
    h = host.strip("[]")
    try:
        return str(ipaddress.ip_address(h))  # keeps an IPv6 scope id
    except ValueError:
        ip = literal_ip(h)
        return None if ip is None else str(ip)


_resolvers: dict[tuple, Resolver] = {}
_resolvers_lock = threading.Lock()
_resolvers_pid = -1


def resolver_for(servers: Iterable[str] = (), negative_ttl_s: float = 30.0, lifetime_s: float = 10.0) -> Resolver:
    """The process's Resolver for these settings (shared by every Fetcher with them, so its cache is)."""
    global _resolvers_pid
    addresses = tuple(split_dns_server(s) for s in servers)
    key = (addresses, negative_ttl_s, lifetime_s if addresses else None)  # getaddrinfo has no lifetime to set
    with _resolvers_lock:
        if _resolvers_pid != os.getpid():  # after a fork the lookups under way are not ours
            _resolvers.clear()
            _resolvers_pid = os.getpid()
        r = _resolvers.get(key)
        if r is None:
            r = _resolvers[key] = Resolver(addresses, negative_ttl_s=negative_ttl_s, lifetime_s=lifetime_s)
        return r


def default_resolver() -> Resolver:
    return resolver_for()

