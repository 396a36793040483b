"""User blocklists of domains and URLs, applied to candidates before anything is downloaded.

Config ``filter.blocklist_domains`` (domains inline, or files of them) and ``filter.blocklist_urls``
(files of URLs); setting either puts ``blocklist`` first in ``filter.chain`` (pipeline/config.py).
The drop reason is ``blocklisted``.

- Domains: a listed domain blocks its own host and every subdomain (``example.com`` blocks
  ``img.example.com``, not ``notexample.com``), whatever the URL's port. Hosts and entries compare in
  lowercase ASCII: international names as IDNA (``bücher.de`` = ``xn--bcher-kva.de``), no trailing dot.
  An IP address blocks that address only. List files hold one domain a line; blank lines, ``#``
  comments, a leading ``*.`` or ``.`` and hosts-file lines (``0.0.0.0 ads.example.com``) are accepted;
  anything else (a URL, a port, a bad name) is an error naming the file and line.
- URLs: matched after normalisation: scheme and host in lowercase (host as IDNA), the default port
  (80, 443) dropped, the fragment and any user:password@ dropped, an empty path as ``/``. Path and
  query are compared as written (servers treat their case and encoding as they like).

A file entry (one containing a ``/``, or naming an existing file) may be any fsspec path or URL
(s3://…; ``.gz`` is read compressed); every Spark worker reads it once, so on a cluster it must be a
path the workers can reach. Each worker holds the lists as Python sets (about 100 bytes an entry).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pyarrow as pa

from filters.base import Filter, FilterResult
from pipeline.errors import UserError

DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")  # "_" occurs in real DNS names


def is_file_entry(entry: str) -> bool:
    """A ``blocklist_domains`` entry names a file when it has a ``/`` (domains never do) or is an existing file."""
    entry = entry.strip()
    return "/" in entry or os.path.isfile(entry)


def _ip(host: str) -> str | None:
    """The canonical text of an IP address host (``[::1]`` → ``::1``), else None."""
    h = host.strip("[]")
    if not h or not (h[0].isdigit() or ":" in h):
        return None
    try:
        return str(ipaddress.ip_address(h))
    except ValueError:
        return None


def host_key(host: str) -> str | None:
    """The comparable form of a host: lowercase ASCII (IDNA), no trailing dot; None if it has none."""
    host = host.strip().rstrip(".").lower()
    if not host:
        return None
    ip = _ip(host)
    if ip is not None:
        return ip
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")  # Python's IDNA 2003 codec (stdlib), also lowercases
        except UnicodeError:
            return None
    return host


def parse_domain(entry: str) -> str:
    """One domain list entry → its comparable form; ValueError says what is wrong with it."""
    raw = entry.strip()
    if "://" in raw or "/" in raw:
        raise ValueError(f"{entry!r} is a URL or path, not a domain (URLs go in filter.blocklist_urls)")
    d = raw.removeprefix("*.").lstrip(".")
    ip = _ip(d)
    if ip is not None:
        return ip
    if ":" in d:
        raise ValueError(f"{entry!r}: a domain entry has no port (a listed domain is blocked on every port)")
    key = host_key(d)
    if key is None or len(key) > 253 or not all(_LABEL.match(label) for label in key.split(".")):
        raise ValueError(f"{entry!r} is not a domain name")
    return key


def domain_entries(line: str) -> list[str]:
    """The domains on one line of a list file: none for blank and comment lines; every name after
    the address on a hosts-file line (``0.0.0.0 a.example b.example``)."""
    fields = line.split("#", 1)[0].split()
    if len(fields) > 1 and _ip(fields[0]) is not None:
        fields = fields[1:]
    elif len(fields) > 1:
        raise ValueError(f"{line.strip()!r}: one domain a line (or a hosts-file line: address, then names)")
    return [parse_domain(f) for f in fields]


def normalise_url(url: str) -> str | None:
    """The comparable form of an http(s) URL (module docstring), or None when it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:  # a bad port or IPv6 literal
        return None
    scheme = parts.scheme.lower()
    host = host_key(parts.hostname or "")
    if scheme not in DEFAULT_PORTS or host is None:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def url_host(url: str) -> str | None:
    """The comparable host of a URL (any scheme), or None."""
    try:
        return host_key(urlsplit(url.strip()).hostname or "")
    except ValueError:
        return None


def domain_blocked(host: str, domains: set[str] | frozenset[str]) -> bool:
    """True when ``host`` or a parent domain of it is in ``domains`` (IP addresses: exact match)."""
    if host in domains:
        return True
    if _ip(host) is not None:
        return False
    dot = host.find(".")
    while dot != -1:
        if host[dot + 1:] in domains:
            return True
        dot = host.find(".", dot + 1)
    return False


def _lines(path: str, key: str) -> Iterable[tuple[int, str]]:
    """(line number, line) of a list file on any filesystem; a missing or unreadable file is a UserError."""
    import fsspec

    from pipeline import storage

    try:
        with fsspec.open(path, "rt", encoding="utf-8-sig", compression="infer", **storage.storage_options(path)) as f:
            yield from enumerate(f, 1)
    except FileNotFoundError:
        raise UserError(f"filter.{key}: file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"filter.{key}: {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_domain_file(path: str) -> set[str]:
    out: set[str] = set()
    for n, line in _lines(path, "blocklist_domains"):
        try:
            out.update(domain_entries(line))
        except ValueError as e:
            raise UserError(f"filter.blocklist_domains: {path}, line {n}: {e}") from None
    return out


def read_url_file(path: str) -> set[str]:
    out: set[str] = set()
    for n, line in _lines(path, "blocklist_urls"):
        text = line.split(" #", 1)[0].strip()  # "#" inside a URL starts its fragment: comments need a space before
        if not text or text.startswith("#"):
            continue
        url = normalise_url(text)
        if url is None:
            raise UserError(f"filter.blocklist_urls: {path}, line {n}: {text[:200]!r} is not an http(s) URL")
        out.add(url)
    return out


class BlocklistFilter(Filter):
    """Caption-chain filter: drop rows whose ``url`` is on a user blocklist (drop reason "blocklisted").

    ``domains``: domains or files of them (``is_file_entry``); ``url_files``: files of URLs. The lists
    are read in ``setup`` (once per process); with no lists every row is kept."""

    name = "blocklisted"

    def __init__(self, domains: Iterable[str] = (), url_files: Iterable[str] = ()):
        self.domain_entries, self.url_files = list(domains), list(url_files)
        self.domains: set[str] | None = None
        self.urls: set[str] | None = None

    @classmethod
    def from_config(cls, cfg) -> BlocklistFilter:
        return cls(cfg.filter.blocklist_domains, cfg.filter.blocklist_urls)

    def setup(self) -> None:
        if self.domains is not None:
            return
        domains: set[str] = set()
        for entry in self.domain_entries:
            if is_file_entry(entry):
                domains |= read_domain_file(entry.strip())
            else:
                try:
                    domains.add(parse_domain(entry))
                except ValueError as e:
                    raise UserError(f"filter.blocklist_domains: {e}") from None
        urls: set[str] = set()
        for path in self.url_files:
            urls |= read_url_file(path)
        self.domains, self.urls = domains, urls

    def blocked(self, url: object) -> bool:
        if not isinstance(url, str):
            return False  # not a URL: url_safety's to drop (bad_url)
        if self.domains:
            host = url_host(url)
            if host is not None and domain_blocked(host, self.domains):
                return True
        if self.urls:
            key = normalise_url(url)
            return key is not None and key in self.urls
        return False

    def apply(self, batch: pa.RecordBatch) -> FilterResult:
        self.setup()
        urls = batch.column(batch.schema.get_field_index("url")).to_pylist()
        return FilterResult(np.fromiter((not self.blocked(u) for u in urls), dtype=bool, count=len(urls)))
