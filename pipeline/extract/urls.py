"""Image URL resolution: one reference against its page's base URL, scalar and column-wise.

:func:`resolve_url` is the rule (``urljoin`` minus the fragment, plus the drop reasons);
:func:`resolve_url_column` gives the same answers for a whole batch, joining plain references
with Arrow kernels and sending the rest through resolve_url (tests compare the two).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from urllib.parse import urljoin, urlparse

import pyarrow as pa

from pipeline.rules import MAX_URL_LENGTH

# Characters for which urljoin does more than the fast paths below (whitespace removal, params, IPv6 checks).
_ODD_URL_CHARS = re.compile(r"[\t\n\r;\[\]]")


@functools.lru_cache(maxsize=256)
def _base_parts(base: str) -> tuple[str, str, list[str], bool]:
    """(scheme, ``scheme://netloc``, directory segments, any dot segment?) of a base URL, parsed once per page."""
    p = urlparse(base)
    parts = p.path.split("/")
    if parts[-1] != "":
        del parts[-1]
    return p.scheme, f"{p.scheme}://{p.netloc}", parts, any(seg in (".", "..") for seg in parts)


def _join_path(base: str, raw: str) -> str:
    """``urljoin(base, raw)`` for a reference without scheme: CPython's algorithm (RFC 3986 merge,
    dot segments, empty inner segments dropped) without re-parsing the base for every image."""
    scheme, origin, base_dirs, base_dots = _base_parts(base)
    if raw[:2] == "//":
        return f"{scheme}:{raw}" if raw[2:3] and raw[2] not in "/?#" else urljoin(base, raw)
    q, h = raw.find("?"), raw.find("#")
    cut = q if q >= 0 and (h < 0 or q < h) else h
    path, rest = (raw, "") if cut < 0 else (raw[:cut], raw[cut:])
    if path[:1] == "/":
        segments = path.split("/")
    else:
        segments = base_dirs + path.split("/")
        if "" in segments[1:-1]:
            segments[1:-1] = [seg for seg in segments[1:-1] if seg]
    if base_dots or path[:1] == "." or "/." in path:
        resolved: list[str] = []
        for seg in segments:
            if seg == "..":
                if resolved:
                    resolved.pop()
            elif seg != ".":
                resolved.append(seg)
        if segments[-1] in (".", ".."):
            resolved.append("")
        segments = resolved
    joined = "/".join(segments)
    return origin + (joined if joined[:1] == "/" else "/" + joined) + rest


def resolve_url(raw: str | None, base: str | None, max_len: int = MAX_URL_LENGTH) -> tuple[str | None, str | None]:
    """(absolute http(s) URL without fragment, None) or (None, drop reason).

    Same result as ``urljoin(base, raw)`` minus the fragment (tested against it); absolute,
    protocol- and path-relative references skip urljoin, the slowest step of extraction otherwise.
    """
    if not raw:
        return None, "no_url"
    raw = raw.strip()
    if not raw:
        return None, "no_url"
    if len(raw) > max_len:
        return None, "data_uri" if raw[:5].lower() == "data:" else "url_too_long"
    odd = _ODD_URL_CHARS.search(raw)
    try:
        if raw[:7] == "http://" or raw[:8] == "https://":
            url = raw if odd is None else urljoin(base or "", raw)
        elif raw[:5].lower() == "data:":
            return None, "data_uri"
        elif odd is None and base and base[:4] == "http" and raw[0] not in "?#" and ":" not in raw.split("/", 1)[0]:
            url = _join_path(base, raw)
        else:
            url = urljoin(base, raw) if base else raw
    except ValueError:  # e.g. "Invalid IPv6 URL"
        return None, "bad_url"
    if "#" in url:
        url = url.split("#", 1)[0]
    if url[-1:] == "?" and url.find("?") == len(url) - 1:
        url = url[:-1]  # an empty query, as urljoin drops it
    if url[:7] == "http://":
        rest = url[7:]
    elif url[:8] == "https://":
        rest = url[8:]
    else:
        low = url[:8].lower()
        if low.startswith(("http://", "https://")):  # "HTTP://x": scheme in lower case, as urljoin writes it
            url = low.split(":", 1)[0] + url[len(low.split(":", 1)[0]):]
            rest = url.split("://", 1)[1]
        elif ":" in url.split("/", 1)[0]:
            return None, "bad_scheme"  # javascript:, ftp:, mailto: …
        else:
            return None, "not_absolute"  # relative with nothing to resolve against ("UNLIKELY")
    if not rest or rest[0] in "/?":
        return None, "bad_url"  # no host
    return url, None


def target_uri(value: str | None) -> str:
    """A WARC-Target-URI as a plain URL. WARC/1.0's grammar writes it in angle brackets
    (``<https://example.org/page>``) and several writers do; WARC/1.1 and Common Crawl don't."""
    if not isinstance(value, str):
        return ""
    value = value.strip()
    if value[:1] == "<" and value[-1:] == ">":
        value = value[1:-1].strip()
    return value


def page_base(page_url: str, base_href: str | None) -> str:
    """The URL a page's relative links resolve against: its ``<base href>`` (itself resolved against
    the page URL) or the page URL. resolve_url's fast paths first: only the fragment and an empty
    query can differ from urljoin's answer, and neither changes how a reference resolves."""
    href = (base_href or "").strip()
    if not href:
        return page_url
    url, _ = resolve_url(href, page_url)
    if url is not None:
        return url
    try:
        return urljoin(page_url, href)
    except ValueError:
        return page_url


def srcset_candidates(srcset: str) -> Iterator[tuple[str, str]]:
    """(url, descriptor) pairs of a srcset, split as the HTML spec does (URLs may contain commas)."""
    pos, n = 0, len(srcset)
    while pos < n:
        while pos < n and (srcset[pos].isspace() or srcset[pos] == ","):
            pos += 1
        start = pos
        while pos < n and not srcset[pos].isspace():
            pos += 1
        url = srcset[start:pos]
        if not url:
            return
        if url.endswith(","):
            yield url.rstrip(","), ""
            continue
        start = pos
        depth = 0
        while pos < n and (srcset[pos] != "," or depth):
            depth += {"(": 1, ")": -1}.get(srcset[pos], 0)
            pos += 1
        yield url, srcset[start:pos].strip()


def largest_srcset(srcset: str) -> str | None:
    """The URL of the largest candidate of a srcset ("a.jpg 480w, b.jpg 2x"; no descriptor = 1x)."""
    best, best_key = None, (-1, -1.0)
    for url, desc in srcset_candidates(srcset):
        d = (desc.split() or ["1x"])[0].lower()
        try:
            key = (1, float(d[:-1])) if d.endswith("w") else (0, float(d[:-1]) if d.endswith("x") else 1.0)
        except ValueError:
            key = (0, 1.0)
        if key > best_key:
            best, best_key = url, key
    return best


# --------------------------------------------------------------------------- column-wise
# Printable ASCII without space # ; [ \ ]: URLs made only of these take the Arrow fast paths below.
_URL_CHARS = r'[!"$-:<-Z^-~]*$'
_ABSOLUTE = r'^https?://[!"$-.0-:<->@-Z^-~]' + _URL_CHARS  # a host right after "//"
_PROTOCOL_RELATIVE = r'^//[!"$-.0-:<->@-Z^-~]' + _URL_CHARS
_ROOT_RELATIVE = r'^/(?:[!"$-.0-:<-Z^-~]' + _URL_CHARS + ")?$"
_PATH_RELATIVE = r'^[!"$-\-0-9<->@-Z^-~][!"$-9<-Z^-~]*$'  # not / . ? first; no ":" at all (no scheme)
# A base URL whose directories urljoin uses as they are: http(s), plain characters, no empty or dot
# directories (a directory may not start with "."), any file name and query after them.
_SIMPLE_BASE = (r'^(?P<scheme>https?)://(?P<host>[!"$-.0-:<->@-Z^-~]+)'
                r'(?P<dirs>(?:/[!"$-\-0-:<->@-Z^-~][!"$-.0-:<->@-Z^-~]*)*/)?[!"$-.0-:<->@-Z^-~]*(?:[?#].*)?$')


def join_prefixes(bases: pa.Array, base_of, kind: pa.Array, up: pa.Array) -> pa.Array:
    """What ``urljoin(bases[base_of[i]], ref)`` puts before a protocol-relative (kind 0: ``scheme:``),
    root-relative (1: ``scheme://host``) or path-relative reference (2: the base's directory ``up``
    levels higher, never above the root, ending in "/"); null where the base needs urljoin itself.
    Bases are parsed once each (a page has many images), then spread over the rows."""
    import pyarrow.compute as pc

    parts = pc.extract_regex(bases, _SIMPLE_BASE)
    scheme, host, dirs = (pc.take(pc.struct_field(parts, f), base_of) for f in ("scheme", "host", "dirs"))
    origin = pc.binary_join_element_wise(scheme, host, "://")
    dirs = pc.if_else(pc.equal(dirs, ""), "/", dirs)
    for step in range(1, min(pc.max(up).as_py() or 0, 64) + 1):  # "../" × up, on the rows still going up
        rows = pc.greater_equal(up, step)
        dirs = pc.replace_with_mask(dirs, rows, pc.replace_substring_regex(pc.filter(dirs, rows), "[^/]+/$", ""))
    directory = pc.if_else(pc.greater(up, 64), pa.nulls(len(up), pa.string()), pc.binary_join_element_wise(origin, dirs, ""))
    return pc.case_when(pc.make_struct(pc.equal(kind, 0), pc.equal(kind, 1)),
                        pc.binary_join_element_wise(scheme, ":", ""), origin, directory)


def resolve_url_column(raw: pa.Array, bases: pa.Array, page_of, max_len: int,
                       wanted: pa.Array | None = None) -> tuple[pa.Array, list[str]]:
    """:func:`resolve_url` of every row (``bases[page_of[i]]`` is row i's base) or of the ``wanted``
    rows: (URLs, null where dropped or not wanted; the drop reasons). Absolute, protocol-, root- and path-relative references made of
    plain characters are joined with Arrow kernels (the same answer: tests compare them); the
    others (dot segments, odd characters, data: URIs …) go through resolve_url one by one."""
    import numpy as np
    import pyarrow.compute as pc

    raw = pc.fill_null(raw, "")
    plain = pc.and_not(pc.less_equal(pc.binary_length(raw), max_len), pc.ends_with(raw, "?"))
    absolute = pc.and_(plain, pc.match_substring_regex(raw, _ABSOLUTE))
    protocol = pc.and_(plain, pc.match_substring_regex(raw, _PROTOCOL_RELATIVE))
    # leading "../" steps up from the base's directory; any other dot segment goes to resolve_url
    rest = pc.replace_substring_regex(raw, r"^(?:\.\./)+", "")
    up = pc.divide(pc.subtract(pc.binary_length(raw), pc.binary_length(rest)), 3)
    no_dots = pc.invert(pc.match_substring(rest, "/."))
    root = pc.and_(pc.and_(plain, no_dots), pc.match_substring_regex(raw, _ROOT_RELATIVE))
    relative = pc.and_(pc.and_(pc.and_(plain, no_dots), pc.invert(pc.match_substring(rest, "//"))),
                       pc.or_(pc.match_substring_regex(rest, _PATH_RELATIVE),
                              pc.and_(pc.equal(rest, ""), pc.greater(up, 0))))
    joined = pc.or_(pc.or_(protocol, root), relative)
    url = pc.if_else(absolute, raw, pa.nulls(len(raw), pa.string()))
    rows = np.flatnonzero(joined.to_numpy(zero_copy_only=False))
    if len(rows):
        kind = pc.case_when(pc.make_struct(pc.take(protocol, rows), pc.take(root, rows)), 0, 1, 2)
        prefix = join_prefixes(bases, page_of[rows], kind, pc.take(up, rows))
        tail = pc.if_else(pc.take(relative, rows), pc.take(rest, rows), pc.take(raw, rows))
        url = pc.replace_with_mask(url, joined, pc.binary_join_element_wise(prefix, tail, ""))
    reasons: list[str] = []
    slow = pc.is_null(url) if wanted is None else pc.and_(wanted, pc.is_null(url))
    rows = np.flatnonzero(slow.to_numpy(zero_copy_only=False))
    if len(rows):
        base_of, resolved = bases.to_pylist(), []
        for r, i in zip(pc.take(raw, rows).to_pylist(), rows):
            u, reason = resolve_url(r, base_of[page_of[i]], max_len)
            resolved.append(u)
            if reason:
                reasons.append(reason)
        url = pc.replace_with_mask(url, slow, pa.array(resolved, pa.string()))
    if wanted is not None:
        url = pc.if_else(wanted, url, pa.nulls(len(url), pa.string()))
    return url, reasons
