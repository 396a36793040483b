"""URL safety: which URLs the fetcher may ask at all (the caption filter ``filters.url_safety`` wraps it).

img2dataset's own fetcher happily opens ``file://`` and ``data:`` URLs and follows redirects to
loopback and private addresses (DESIGN.md); this module is the one place that says no. Without DNS
(the filter stage), ``check_url`` judges the URL text: scheme, length, userinfo, and hosts written
as IP literals in any form the resolver accepts (``127.1``, ``0x7f.0.0.1``, ``2130706433``,
``[::ffff:127.0.0.1]``). A host name is judged in the ASCII form IDNA maps it to (UTS #46, as
requests sends it), so ``１２７.０.０.１`` is ``127.0.0.1`` and ``ⓛⓞⓒⓐⓛⓗⓞⓢⓣ`` is ``localhost``; the
fetcher asks ``ascii_url``'s spelling. The fetcher also checks every address a host name resolves
to with ``is_blocked_ip``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

import idna

from pipeline.rules import MAX_URL_LENGTH

ALLOWED_SCHEMES = ("http", "https")
# Names that always mean "this machine" (RFC 6761), whatever DNS says.
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_WHITESPACE = re.compile(r"\s")  # the characters str.isspace() accepts


def is_blocked_ip(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for any address that is not a plain public unicast one.

    Loopback, private, shared (CGNAT), link-local, multicast, reserved, unspecified, documentation
    ranges …; IPv6 forms that embed an IPv4 address (mapped, 6to4, Teredo, NAT64) are judged by
    the embedded address. Unparseable input counts as blocked.
    """
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0] if isinstance(ip, str) else ip)
    except ValueError:
        return True
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = addr.ipv4_mapped or addr.sixtofour or (addr.teredo[1] if addr.teredo else None)
        if embedded is None and addr in _NAT64:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is not None and is_blocked_ip(embedded):
            return True
    return (
        not addr.is_global
        or addr.is_multicast
        or addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_reserved
        or addr.is_unspecified
    )


def literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host string denotes without DNS, in every spelling inet_aton accepts, else None."""
    h = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        pass
    if h and all(c in "0123456789abcdefxABCDEFX." for c in h) and h[0].isdigit():
        try:  # legacy forms the C resolver still accepts: 127.1, 0x7f.1, 017700000001, 2130706433
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except (OSError, ValueError):
            return None
    return None


def host_allowed(host: str, port: int | None, allow_hosts: Iterable[str]) -> bool:
    """True when ``host`` (any port) or ``host:port`` is listed in allow_hosts (case-insensitive)."""
    host = host.lower().strip("[]")
    for entry in allow_hosts:
        e = entry.lower().strip()
        if e == host:
            return True
        h, sep, p = e.rpartition(":")
        if sep and p.isdigit() and h.strip("[]") == host and port is not None and int(p) == port:
            return True
    return False


def ascii_host(host: str) -> str | None:
    """The host as DNS sees it: lower case, non-ASCII names mapped by IDNA (UTS #46, fullwidth digits
    and dots, circled letters …) to their ASCII form; None when IDNA refuses the name."""
    if host.isascii():
        return host.lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError):
        try:  # IDNA 2003 (the stdlib codec) accepts some names IDNA 2008 refuses (symbols)
            return host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return None


def ascii_url(url: str) -> str:
    """The URL with its host in ``ascii_host`` form (unchanged when already ASCII or unusable)."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return url
    if host.isascii():
        return url
    mapped = ascii_host(host)
    if mapped is None:
        return url
    netloc = f"[{mapped}]" if ":" in mapped else mapped
    return urlunsplit(parts._replace(netloc=netloc + (f":{port}" if port is not None else "")))


def split_url(url: str) -> tuple[str, str, int | None] | str:
    """(scheme, host, port) of a URL, the host in ``ascii_host`` form, or the reason it is unusable."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "bad_url"
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        return "blocked_scheme" if scheme else "bad_url"
    if parts.username is not None or parts.password is not None:
        return "userinfo"
    host = ascii_host((parts.hostname or "").rstrip("."))
    if not host or _WHITESPACE.search(url.strip()):
        return "bad_url"
    if port is None:
        port = 443 if scheme == "https" else 80
    return scheme, host, port


def check_url(url: str, max_length: int = MAX_URL_LENGTH, allow_hosts: Iterable[str] = ()) -> str | None:
    """None when the URL may be fetched, else the reason: blocked_scheme, blocked_address, bad_url,
    url_too_long or userinfo. No DNS: names are checked again after resolution by the fetcher."""
    if not isinstance(url, str) or not url.strip():
        return "bad_url"
    if len(url) > max_length:
        return "url_too_long"
    parts = split_url(url)
    if isinstance(parts, str):
        return parts
    _, host, port = parts
    if host_allowed(host, port, allow_hosts):
        return None
    lower = host.lower()
    if lower in LOCAL_NAMES or lower.endswith(".localhost"):
        return "blocked_address"
    ip = literal_ip(host)
    if ip is not None and is_blocked_ip(ip):
        return "blocked_address"
    return None
