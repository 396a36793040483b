"""URL normalisation and the crawl's scope: which links are the same page, and which are followed."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pipeline.errors import UserError
from pipeline.fetch.url_safety import ascii_host


def normalise(url: str, strip_params: Iterable[str] = ()) -> str | None:
    """The URL's canonical spelling, or None when it is not an http(s) URL with a host: scheme and
    host lower-cased (IDNA-mapped to ASCII), default port and fragment dropped, ``strip_params``
    removed from the query."""
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        host = ascii_host((parts.hostname or "").rstrip("."))
        port = parts.port
    except (ValueError, AttributeError):
        return None
    if scheme not in ("http", "https") or not host or parts.username or parts.password:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != (80 if scheme == "http" else 443):
        netloc += f":{port}"
    query = parts.query
    strip = {p.lower() for p in strip_params}
    if query and strip:
        pairs = parse_qsl(query, keep_blank_values=True)
        kept = [(k, v) for k, v in pairs if k.lower() not in strip]
        if len(kept) != len(pairs):
            query = urlencode(kept)
    return urlunsplit((scheme, netloc, parts.path or "/", query, ""))


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").rstrip(".")


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@functools.cache
def _suffix_list():
    """The Public Suffix List snapshot bundled with ``publicsuffixlist`` (no network at run time),
    ICANN and private sections: ``a.github.io`` and ``b.github.io`` are different sites."""
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def registered_domain(host: str) -> str:
    """The registrable domain (Public Suffix List): ``a.b.example.co.uk`` → ``example.co.uk``; an IP
    address, a public suffix itself or a name under no known suffix (``localhost``) is itself."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    return _suffix_list().privatesuffix(host) or host


class Scope:
    """Which URLs the crawl follows: the seeds' hosts or registered domains (or any), include/exclude regexes."""

    def __init__(self, cc, seed_hosts: Iterable[str]):
        self.kind = cc.scope
        self.hosts = set(seed_hosts)
        self.domains = {registered_domain(h) for h in self.hosts}
        try:
            self.include = [re.compile(p) for p in cc.include]
            self.exclude = [re.compile(p) for p in cc.exclude]
        except re.error as e:
            raise UserError(f"crawl.include/exclude: bad regex {e.pattern!r}: {e}") from None

    def __contains__(self, url: str) -> bool:
        host = host_of(url)
        if self.kind == "same_host" and host not in self.hosts:
            return False
        if self.kind == "same_domain" and registered_domain(host) not in self.domains:
            return False
        if self.include and not any(p.search(url) for p in self.include):
            return False
        return not any(p.search(url) for p in self.exclude)
