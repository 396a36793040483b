"""A small authoritative DNS server (UDP) that answers from a table: names for local test webs.

Tests and the download benchmark serve hosts on many 127.x.y.z addresses under made-up names and
point the fetcher at this server with ``download.dns_servers: ["127.0.0.1:PORT"]``. It answers A
and AAAA queries with the table's addresses, NXDOMAIN for names it does not know, and nothing at
all for "tarpit" names (a resolver that never answers, as some broken authoritative servers do).

    with DnsServer({"img.test": ["127.0.0.2"]}, tarpit={"slow.test"}) as dns:
        cfg.download.dns_servers = [dns.address]
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

Answer = list[str] | Callable[[int], list[str]]  # addresses, or n-th query of the name (1, 2 …) → addresses


def _name(text: str) -> str:
    return text.lower().rstrip(".")


class DnsServer:
    """Answer A/AAAA queries for ``records`` (name → addresses or a callable), NXDOMAIN for other
    names, silence for ``tarpit`` names; counts queries per name (``queries``). A context manager."""

    def __init__(self, records: dict[str, Answer] | None = None, tarpit: Iterable[str] = (),
                 host: str = "127.0.0.1", port: int = 0, ttl: int = 60):
        self.records = {_name(k): v for k, v in (records or {}).items()}
        self.tarpit = {_name(n) for n in tarpit}
        self.ttl = ttl
        self.queries: Counter = Counter()
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """host:port, as ``download.dns_servers`` takes it."""
        host, port = self._sock.getsockname()[:2]
        return f"{host}:{port}"

    def set(self, name: str, answer: Answer) -> None:
        with self._lock:
            self.records[_name(name)] = answer

    def start(self) -> DnsServer:
        self._thread = threading.Thread(target=self._serve, name="dns-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sock.close()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self.answer(wire)
            if reply is not None:
                try:
                    self._sock.sendto(reply, peer)
                except OSError:
                    pass

    def answer(self, wire: bytes) -> bytes | None:
        """The reply to one query message (None: no reply)."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - garbage in: no answer, as real servers do
            return None
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        for question in query.question:
            name = _name(question.name.to_text())
            with self._lock:
                self.queries[name] += 1
                n = self.queries[name]
                answer = self.records.get(name)
            if name in self.tarpit:
                return None
            if answer is None:
                reply.set_rcode(dns.rcode.NXDOMAIN)
                continue
            ips = answer(n) if callable(answer) else answer
            version = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}.get(question.rdtype)
            matching = [ip for ip in ips if ipaddress.ip_address(ip).version == version]
            if matching:
                rdtype = dns.rdatatype.to_text(question.rdtype)
                reply.answer.append(dns.rrset.from_text_list(question.name, self.ttl, "IN", rdtype, matching))
        return reply.to_wire()
