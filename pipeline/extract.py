"""`wit extract`: WARC/WAT files and URL lists → candidate (image URL, text) pairs.

One Spark task per input file. A task streams its file (memory flat in file size), turns every
``<img>`` (WARC), ``IMG@/src`` link (WAT) or row (URL list) into a candidate or a drop reason, and
yields Arrow batches. Per-file figures (records, pages, pairs, drops and input errors by reason)
are written by the task itself as small JSON files that the driver sums into ``_stats.json`` — the
pairs never travel to the driver. Exact duplicates of (url, text) across files are removed with
one Spark aggregation on ``uid``.

Readers: WARC with FastWARC (+ resiliparse for charsets and its lexbor HTML parser), WAT with
FastWARC + orjson (a file FastWARC cannot read reliably goes on with a line reader that tolerates
wrong Content-Length values: lenient mode), URL lists with pyarrow.
"""

from __future__ import annotations

import codecs
import functools
import gc
import gzip
import html
import io
import json
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlparse

import orjson
import pyarrow as pa

from pipeline import log, storage
from pipeline.errors import UserError
from pipeline.ids import uids_of_keys

FORMATS = ("wat", "warc", "parquet", "csv", "tsv", "jsonl")
BATCH_ROWS = 8192
MAX_URL_LENGTH = 8192  # longer src attributes are junk (inlined data, tracking blobs)
_CHARSET_RE = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.I)
_HTML_SNIFF_RE = re.compile(rb"<\s*(!doctype\s+html|html|head|body|img)\b", re.I)


# --------------------------------------------------------------------------- options and stats
@dataclass(frozen=True)
class Options:
    """What a task needs from the run config (small and picklable)."""

    max_text_length: int = 1000
    lenient: bool = True
    url_col: str = "url"
    caption_col: str = "caption"
    max_url_length: int = MAX_URL_LENGTH
    parser: str = "selectolax"  # | "resiliparse" | "html.parser" (the baseline); see bench/extract.py

    @classmethod
    def from_config(cls, ec) -> Options:
        return cls(max_text_length=ec.max_text_length, lenient=ec.lenient, url_col=ec.url_col,
                   caption_col=ec.caption_col, max_url_length=ec.max_url_length, parser=ec.html_parser)


@dataclass
class FileStats:
    """Figures of one input file; the driver sums them into the stage stats."""

    path: str
    format: str = ""
    records: int = 0  # WARC/WAT records or URL-list rows read
    pages: int = 0  # HTML pages (WARC responses / WAT records with HTML metadata)
    images: int = 0  # <img> / IMG@/src links / URL-list rows: the stage's input rows
    pairs: int = 0  # candidates emitted (before cross-file dedup)
    drops: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    error_examples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def error(self, reason: str, detail: str = "") -> None:
        self.errors[reason] += 1
        if len(self.error_examples) < 5:
            self.error_examples.append(f"{reason}: {detail}"[:300])

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "records": self.records, "pages": self.pages,
                "images": self.images, "pairs": self.pairs, "drops": dict(self.drops),
                "errors": dict(self.errors), "error_examples": self.error_examples,
                "seconds": round(self.seconds, 3)}


# --------------------------------------------------------------------------- clean-up
def clean_text(s: str | None, max_len: int, unescape: bool = True) -> str:
    """Unescape entities, collapse whitespace, cap the length ("" means: no text)."""
    if not s:
        return ""
    if len(s) > 2 * max_len + 64:  # a gigantic attribute: clean only as much of it as the answer needs
        head = _clean_head(s[:2 * max_len + 64], unescape)
        if len(head) >= max_len:
            return head[:max_len]
    if unescape and "&" in s:
        s = html.unescape(s)
    return " ".join(s.split())[:max_len]


def _clean_head(head: str, unescape: bool) -> str:
    """The start that clean_text(head + anything) is sure to begin with: everything before the last
    "&" (an entity cut in two changes only what follows it: entities hold no "&"), less the last word
    (the text that follows may continue it)."""
    if unescape and "&" in head:
        head = html.unescape(head[:head.rfind("&")])
    return " ".join(head.split()[:-1])


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


# --------------------------------------------------------------------------- column-wise clean-up
# Python's str.split() whitespace (str.isspace()) other than the plain space; a test checks the list.
_OTHER_WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_TEXT_NEEDS_WORK = f"[{_OTHER_WHITESPACE}]|  |^ | $"
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


def clean_text_column(texts: pa.Array, max_len: int, unescape: bool = True) -> pa.Array:
    """:func:`clean_text` of every row; rows that are already clean stay in Arrow, the rest (entities,
    odd whitespace, over ``max_len``) go through clean_text itself, so both always agree."""
    import pyarrow.compute as pc

    texts = pc.fill_null(texts, "")
    work = pc.match_substring_regex(texts, _TEXT_NEEDS_WORK + ("|&" if unescape else ""))
    work = pc.or_(work, pc.greater(pc.utf8_length(texts), max_len))
    if not pc.any(work).as_py():
        return texts
    fixed = [clean_text(s, max_len, unescape) for s in pc.filter(texts, work).to_pylist()]
    return pc.replace_with_mask(texts, work, pa.array(fixed, pa.string()))


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


_IMAGE_ROW = pa.struct([("url", pa.string()), ("alt", pa.string()), ("title", pa.string())])
_PAGE_ROW = pa.struct([("page_url", pa.string()), ("record_id", pa.string()), ("base", pa.string()), ("lang", pa.string())])


def _columns(rows: list[tuple], row_type: pa.StructType) -> list[pa.Array]:
    """The string columns of parsed rows, converted in one pass in C++ (transposing the tuples in
    Python first took 5x longer: measured); rows with a value that is not text go column by column."""
    try:
        table = pa.array(rows, row_type)
    except (pa.ArrowException, UnicodeError):
        return [_strings(list(c)) for c in zip(*rows)]
    return [table.field(i) for i in range(row_type.num_fields)]


def _strings(values: list) -> pa.Array:
    """A string column of parsed values; anything that is not text (a JSON number, a lone surrogate) is replaced."""
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowException, UnicodeError):
        return pa.array([v.encode("utf-8", "replace").decode("utf-8") if isinstance(v, str) else None for v in values],
                        pa.string())


# --------------------------------------------------------------------------- output batches
class PairSink:
    """Collects each page's images as they are read; :meth:`flush` turns them into candidates (or
    counted drops) column-wise, so per-image work runs in Arrow kernels, not in Python."""

    def __init__(self, source_file: str, stats: FileStats, opts: Options, unescape: bool = True,
                 caption_source: str = "alt"):
        self.source_file, self.stats, self.opts = source_file, stats, opts
        self.unescape, self.caption_source = unescape, caption_source  # the HTML parser already decoded WARC entities
        self.images: list[tuple] = []  # (url, alt, title) as read
        self.pages: list[tuple] = []  # (page URL, record id, base URL, page language)
        self.n_images: list[int] = []  # images per page

    def add_page(self, images: list[tuple[str | None, str | None, str | None]], base: str | None,
                 page_url: str | None, record_id: str | None, lang: str | None) -> None:
        """A page's (url, alt, title) images (a page without any is not kept: memory stays flat)."""
        if not images:
            return
        self.images += images
        self.pages.append((page_url, record_id, base, lang))
        self.n_images.append(len(images))

    def add_rows(self, images: list[tuple[str | None, str | None, None]], record_ids: list[str]) -> None:
        """A URL list's (url, caption, None) rows: each row is its own page, known by its row id."""
        self.images += images
        self.pages += [(None, rid, None, None) for rid in record_ids]
        self.n_images += [1] * len(images)

    def __len__(self) -> int:
        return len(self.images)

    def full_batch(self) -> Iterator[pa.RecordBatch]:
        """A batch of candidates once BATCH_ROWS images are waiting (none if all were dropped)."""
        if len(self.images) >= BATCH_ROWS:
            batch = self.flush()
            if batch is not None:
                yield batch

    def flush(self) -> pa.RecordBatch | None:
        import numpy as np
        import pyarrow.compute as pc

        from schemas import CANDIDATES

        images, pages, n_images = self.images, self.pages, self.n_images
        self.images, self.pages, self.n_images = [], [], []
        st, opts = self.stats, self.opts
        st.images += len(images)
        if not images:
            return None
        raw_url, alt, title = _columns(images, _IMAGE_ROW)
        page_of = np.repeat(np.arange(len(pages), dtype=np.int64), n_images)
        # text first: most <img> have no alt (real CC); a title stands in for a missing alt
        text = clean_text_column(alt, opts.max_text_length, self.unescape)
        no_alt = pc.equal(text, "")
        title = pc.if_else(no_alt, title, pa.nulls(len(title), pa.string()))
        text = pc.if_else(no_alt, clean_text_column(title, opts.max_text_length, self.unescape), text)
        source = pc.if_else(no_alt, pa.scalar("title"), pa.scalar(self.caption_source))
        has_text = pc.not_equal(text, "")
        empty = len(text) - pc.sum(has_text).as_py()
        if empty:
            st.drops["empty_text"] += empty
        page_url, record_id, base, lang = _columns(pages, _PAGE_ROW)
        url, reasons = resolve_url_column(raw_url, base, page_of, opts.max_url_length, has_text)
        st.drops.update(reasons)
        keep = pc.and_(has_text, pc.is_valid(url))
        url, text, source = (pc.filter(a, keep) for a in (url, text, source))
        page_of = page_of[keep.to_numpy(zero_copy_only=False)]
        st.pairs += len(url)
        if not len(url):
            return None
        keys = pc.binary_join_element_wise(url, text, "\x00").cast(pa.binary()).to_pylist()
        uid = pa.array(uids_of_keys(keys), pa.string())
        page_url, record_id, lang = (c.take(page_of) for c in (page_url, record_id, lang))
        return pa.RecordBatch.from_arrays([uid, url, text, source, page_url, pa.array([self.source_file] * len(url), pa.string()),
                                           record_id, lang], schema=CANDIDATES)


# --------------------------------------------------------------------------- opening files
def open_binary(path: str):
    """A binary file object for a local path or any fsspec URL."""
    if "://" not in path or path.startswith("file://"):
        return open(path.removeprefix("file://"), "rb")
    fs, p = storage.fs_for(path)
    return fs.open(p, "rb")


def _maybe_gunzip(f):
    """``f`` itself, or a gzip reader over it when it starts with the gzip magic (URL lists, paths files)."""
    head = f.read(2)
    f.seek(0)
    return gzip.GzipFile(fileobj=f, mode="rb") if head == b"\x1f\x8b" else f


def read_lines(f, st: FileStats, chunk_size: int = 1 << 16) -> Iterator[bytes]:
    """Lines (with their ends) of a plain or gzip (multi-member) stream, keeping all data before a cut.

    Unlike GzipFile, a gzip stream cut short or corrupted part-way yields everything that could be
    decompressed, then counts ``truncated_gzip`` / ``bad_gzip``.
    """
    first = f.read(chunk_size)
    gz = first[:2] == b"\x1f\x8b"

    def chunks() -> Iterator[bytes]:
        chunk = first
        if not gz:
            while chunk:
                yield chunk
                chunk = f.read(chunk_size)
            return
        d, fed = zlib.decompressobj(31), False
        while chunk:
            try:
                while chunk:
                    fed = True
                    out = d.decompress(chunk)
                    if out:
                        yield out
                    if not d.eof:
                        break
                    chunk = d.unused_data  # the next gzip member (CC: one per record)
                    d, fed = zlib.decompressobj(31), False
                    if chunk and chunk[:2] != b"\x1f\x8b":
                        if chunk.strip(b"\x00"):
                            st.error("bad_gzip", "data after the last gzip member")
                        return
            except zlib.error as e:
                st.error("bad_gzip", str(e))
                return
            chunk = f.read(chunk_size)
        if fed and not d.eof:
            tail = d.flush()
            if tail:
                yield tail
            st.error("truncated_gzip", "the gzip stream ends inside a member")

    rest = b""
    for chunk in chunks():
        buf = io.BytesIO(rest + chunk if rest else chunk)
        rest = b""
        for line in buf:
            if line.endswith(b"\n"):
                yield line
            else:
                rest = line
    if rest:
        yield rest


def detect_format(path: str, wanted: str = "auto") -> str:
    """The input format from the name (…wat.gz, .warc, .parquet, …), else from the first bytes."""
    if wanted != "auto":
        return wanted
    name = path.lower().rsplit("/", 1)[-1]
    for suffix in (".gz", ".bz2", ".zst", ".xz"):
        name = name.removesuffix(suffix)
    if ".wat" in name:
        return "wat"
    if name.endswith((".warc", ".arc")) or ".warc." in name:
        return "warc"
    for ext, fmt in ((".parquet", "parquet"), (".csv", "csv"), (".tsv", "tsv"), (".jsonl", "jsonl"),
                     (".ndjson", "jsonl"), (".json", "jsonl")):
        if name.endswith(ext):
            return fmt
    try:
        with open_binary(path) as raw:
            head = _maybe_gunzip(raw).read(65536)
    except (OSError, EOFError, zlib.error):
        return "unknown"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"WARC/"):
        return "wat" if b'"Envelope"' in head else "warc"
    return "unknown"


# --------------------------------------------------------------------------- WARC
def _parse_http(block: bytes) -> tuple[bytes, dict[str, str], bytes] | None:
    """(status line, lower-cased headers we need, body) of an HTTP response block."""
    end = block.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end, sep = block.find(b"\n\n"), 2
        if end < 0:
            return None
    lines = block[:end].split(b"\n")
    status = lines[0].strip()
    if not status.startswith(b"HTTP/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        key = k.strip().lower().decode("latin-1")
        if key in ("content-type", "content-encoding", "transfer-encoding"):
            headers[key] = v.strip().decode("latin-1")
    return status, headers, block[end + sep:]


def _dechunk(body: bytes) -> bytes:
    out, pos = [], 0
    while True:
        nl = body.find(b"\r\n", pos)
        if nl < 0:
            break
        size = int(body[pos:nl].split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out.append(body[nl + 2: nl + 2 + size])
        pos = nl + 2 + size + 2
    return b"".join(out)


def _decode_body(body: bytes, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    enc = headers.get("content-encoding", "").lower().strip()
    if enc not in ("gzip", "x-gzip", "deflate", "br") or _HTML_SNIFF_RE.search(body[:1024]):
        return body  # CC often stores the decoded body but keeps the Content-Encoding header
    if enc == "br":
        import brotli  # optional, rare in CC (it stores decoded bodies)

        return brotli.decompress(body)
    return zlib.decompressobj(47).decompress(body)  # 47: gzip or zlib header


def page_charset(body: bytes, content_type: str) -> str:
    """Charset from the HTTP header, else <meta charset>, else detected (resiliparse/uchardet)."""
    m = _CHARSET_RE.search(content_type or "")
    if m:
        try:
            return codecs.lookup(m.group(1)).name
        except LookupError:
            pass
    from resiliparse.parse.encoding import detect_encoding

    return detect_encoding(body, max_len=65536, from_html_meta=True) or "utf-8"


def decode_page(body: bytes, content_type: str) -> str:
    from resiliparse.parse.encoding import bytes_to_str

    return bytes_to_str(body, page_charset(body, content_type), errors="replace")


def images_resiliparse(text: str) -> tuple[str | None, list[tuple]]:
    """(<base href>, [(src, data-src, srcset, alt, title)]) with resiliparse's HTMLTree.

    Measured: iterating its element list is quadratic in the number of <img> (2 s for an 861-image
    page), so selectolax (the same lexbor engine) is the default.
    """
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(text)
    doc = tree.document
    if doc is None:
        return None, []
    base_el = doc.query_selector("base[href]")
    base = base_el.getattr("href") if base_el is not None else None
    out = []
    for el in doc.get_elements_by_tag_name("img"):
        g = el.getattr
        out.append((g("src"), g("data-src"), g("srcset"), g("alt"), g("title")))
    return base, out


def images_selectolax(text: str) -> tuple[str | None, list[tuple]]:
    """(<base href>, [(src, data-src, srcset, alt, title)]) with selectolax's lexbor parser (default)."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(text)
    b = tree.css_first("base[href]")
    base = b.attributes.get("href") if b is not None else None
    out = []
    for node in tree.css("img"):
        a = node.attributes
        out.append((a.get("src"), a.get("data-src"), a.get("srcset"), a.get("alt"), a.get("title")))
    return base, out


def images_html_parser(text: str) -> tuple[str | None, list[tuple]]:
    """The baseline: the standard library's html.parser (what a warcio-based script would use)."""
    from html.parser import HTMLParser

    out: list[tuple] = []
    base: list[str] = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                a = dict(attrs)
                out.append((a.get("src"), a.get("data-src"), a.get("srcset"), a.get("alt"), a.get("title")))
            elif tag == "base" and not base:
                href = dict(attrs).get("href")
                if href:
                    base.append(href)

    p = P(convert_charrefs=True)
    p.feed(text)
    p.close()
    return (base[0] if base else None), out


PARSERS: dict[str, Callable[[str], tuple[str | None, list[tuple]]]] = {
    "selectolax": images_selectolax, "resiliparse": images_resiliparse, "html.parser": images_html_parser,
}


def image_src(src: str | None, data_src: str | None, srcset: str | None) -> str | None:
    """Which URL an <img> shows: the largest srcset candidate, else data-src, else src."""
    if srcset:
        best = largest_srcset(srcset)
        if best:
            return best
    return data_src or src


def _cld2_lang(value: str) -> str | None:
    """Top language of a CC ``languages-cld2`` value ('{"reliable":true,"languages":[{"code":"en"…'''."""
    try:
        langs = json.loads(value).get("languages") or []
    except (ValueError, AttributeError):
        return None
    return langs[0].get("code") if langs and isinstance(langs[0], dict) else None


class _PendingPage:
    """A page's images held until its CC metadata record (with languages-cld2) has been seen."""

    def __init__(self, uri: str, record_id: str | None, base: str | None, images: list[tuple]):
        self.uri, self.record_id, self.base, self.images, self.lang = uri, record_id, base, images, None


def extract_warc(path: str, sink: PairSink, opts: Options) -> Iterator[pa.RecordBatch]:
    """Every <img> of every HTML response in a WARC file (FastWARC reader)."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    st = sink.stats
    parse = PARSERS[opts.parser]
    pending: _PendingPage | None = None

    def emit(p: _PendingPage):
        images = [(image_src(src, data_src, srcset), alt, title) for src, data_src, srcset, alt, title in p.images]
        sink.add_page(images, p.base, p.uri, p.record_id, p.lang)

    with open_binary(path) as f:
        types = WarcRecordType.response | WarcRecordType.metadata | WarcRecordType.resource
        for rec in ArchiveIterator(f, record_types=types, parse_http=False):
            st.records += 1
            h = rec.headers
            uri = h.get("WARC-Target-URI") or ""
            if rec.record_type == WarcRecordType.metadata:
                if pending is not None and uri == pending.uri:
                    block = rec.reader.read()
                    for line in block.split(b"\n"):
                        if line.startswith(b"languages-cld2:"):
                            pending.lang = _cld2_lang(line[15:].decode("utf-8", "replace"))
                continue
            block = rec.reader.read()
            if len(block) < rec.content_length:
                st.error("truncated_record", f"{uri}: {len(block)} of {rec.content_length} bytes")
                if not opts.lenient:
                    continue
            if rec.record_type == WarcRecordType.resource:
                ctype, body = h.get("Content-Type") or "", block
            else:
                parsed = _parse_http(block)
                if parsed is None:
                    st.error("bad_http", uri)
                    continue
                _, headers, body = parsed
                ctype = headers.get("content-type", "")
                if not _is_html(ctype, body):
                    continue
                try:
                    body = _decode_body(body, headers)
                except Exception as e:  # noqa: BLE001 — any codec failure is a bad record
                    st.error("decode_error", f"{uri}: {e}")
                    continue
            if rec.record_type == WarcRecordType.resource and not _is_html(ctype, body):
                continue
            st.pages += 1
            try:
                base, images = parse(decode_page(body, ctype))
            except Exception as e:  # noqa: BLE001 — malformed HTML must not stop the file
                st.error("html_parse_error", f"{uri}: {e}")
                continue
            if pending is not None:
                emit(pending)
            pending = _PendingPage(uri, h.get("WARC-Record-ID"), page_base(uri, base), images)
            yield from sink.full_batch()
    if pending is not None:
        emit(pending)


def _is_html(ctype: str, body: bytes) -> bool:
    ct = ctype.lower()
    if "html" in ct:
        return True
    if ct and not ct.startswith(("text/plain", "application/octet-stream", "unknown")):
        return False
    return bool(_HTML_SNIFF_RE.search(body[:1024]))


# --------------------------------------------------------------------------- WAT
def wat_records(lines: Iterator[bytes], st: FileStats, lenient: bool = True) -> Iterator[tuple[dict[bytes, bytes], bytes]]:
    """(WARC headers, payload) of every record of a WAT file, read line by line.

    A WAT payload is one JSON line, so a record ends where the next ``WARC/1.x`` line starts; this
    reads records whose Content-Length is wrong (counted as ``bad_content_length``; skipped unless
    lenient) and gzip streams cut short (``truncated_gzip``).
    """
    headers: dict[bytes, bytes] | None = None
    in_header = False
    payload: list[bytes] = []

    def finish():
        data = b"".join(payload)
        cl = headers.get(b"content-length", b"")
        try:
            n = int(cl)
        except ValueError:
            n = -1
        if n < 0 or len(data) < n or data[n:n + 4].strip(b"\r\n"):
            st.error("bad_content_length", f"{headers.get(b'warc-target-uri', b'?')[:200]!r}: "
                                           f"Content-Length {cl.decode('latin-1')[:20]}, payload {len(data)}")
            return data, False
        if data[n:] != b"\r\n\r\n":
            st.error("bad_record_end", f"{headers.get(b'warc-target-uri', b'?')[:200]!r}: {data[n:n + 8]!r}")
            return data[:n], False
        return data[:n], True

    for line in lines:
        if line.startswith(b"WARC/1."):
            if headers is not None:
                data, ok = finish()
                if ok or lenient:
                    yield headers, data
            headers, in_header, payload = {}, True, []
        elif in_header:
            if not line.strip():
                in_header = False
            else:
                k, _, v = line.partition(b":")
                headers[k.strip().lower()] = v.strip()
        elif headers is not None:
            payload.append(line)
        elif line.strip():
            st.error("not_warc", repr(line[:80]))
            return
    if headers is not None:
        data, ok = finish()
        if ok or lenient:
            yield headers, data


def _json_object(payload: bytes) -> dict:
    """A WAT payload as a dict. orjson is fast and strict; the standard library also reads what
    orjson refuses but real pages contain (lone surrogates: replaced later, the page is kept)."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        doc = json.loads(payload)  # raises ValueError when the payload really is not JSON
    if not isinstance(doc, dict):
        raise TypeError(f"a JSON {type(doc).__name__}, not an object")
    return doc


def _wat_lang(payload: bytes) -> str | None:
    """languages-cld2 of a WAT metadata record."""
    env = _json_object(payload)["Envelope"]
    for item in env["Payload-Metadata"]["WARC-Metadata-Metadata"]["Metadata-Records"]:
        if item.get("Name") == "languages-cld2":
            return _cld2_lang(str(item.get("Value") or ""))
    return None


def _wat_page(payload: bytes) -> tuple[str | None, str | None, str | None, list[tuple]] | None:
    """(page URL, record id, <base href>, [(url, alt, title)]) of a WAT response record, None if no HTML.
    Parsing the whole record with orjson beats simdjson's lazy proxies here (measured on sample and
    real CC records): most of a record is the Links list, which is read in full anyway."""
    env = _json_object(payload)["Envelope"]
    meta = ((env.get("Payload-Metadata") or {}).get("HTTP-Response-Metadata") or {}).get("HTML-Metadata")
    if meta is None:
        return None
    images = [(lk.get("url"), lk.get("alt"), lk.get("title")) for lk in meta.get("Links") or () if lk.get("path") == "IMG@/src"]
    base = (meta.get("Head") or {}).get("Base")
    whm = env.get("WARC-Header-Metadata") or {}
    return whm.get("WARC-Target-URI"), whm.get("WARC-Record-ID"), base, images


class _NotWellFormed(Exception):
    """FastWARC met something it cannot read reliably: switch to the lenient line reader."""


def wat_payloads(path: str, st: FileStats, lenient: bool = True) -> Iterator[tuple[Any, bytes]]:
    """(WARC headers, payload) of each record of a WAT file; ``headers.get("WARC-Target-URI")`` is
    the page (asked only when needed: a header lookup costs more than a page's other checks).

    FastWARC reads well-formed files (4x faster than a Python line loop). At the first record that
    does not look right (unknown type, short payload, a payload that is not one JSON object, an
    early stop), the rest of the file is read again with :func:`wat_records`, which tolerates wrong
    Content-Length values and LF line ends and counts each problem.
    """
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    done = 0
    try:
        with open_binary(path) as f:
            unknown, metadata, json_ends = WarcRecordType.unknown, WarcRecordType.metadata, (b"}", b"}\r\n", b"}\n")
            for rec in ArchiveIterator(f, parse_http=False):
                rtype = rec.record_type
                if rtype == unknown:
                    raise _NotWellFormed
                payload = rec.reader.read()
                if len(payload) != rec.content_length or b"\nWARC/1." in payload:
                    raise _NotWellFormed
                if rtype == metadata and not (payload[:1] == b"{" and payload.endswith(json_ends)):
                    raise _NotWellFormed
                done += 1
                yield rec.headers, payload
            if f.read(1):
                raise _NotWellFormed
        if done == 0:
            raise _NotWellFormed  # empty, or not a WARC at all: let the line reader say which
    except _NotWellFormed:
        with open_binary(path) as raw:
            for i, (headers, payload) in enumerate(wat_records(read_lines(raw, st), st, lenient)):
                if i >= done:
                    yield {"WARC-Target-URI": headers.get(b"warc-target-uri", b"").decode("utf-8", "replace")}, payload


def extract_wat(path: str, sink: PairSink, opts: Options) -> Iterator[pa.RecordBatch]:
    """Every IMG@/src link of the WAT's HTML metadata, resolved against <base> or the page URL."""
    st = sink.stats
    pending: _PendingPage | None = None

    def emit(p: _PendingPage):
        sink.add_page(p.images, p.base, p.uri, p.record_id, p.lang)

    for headers, payload in wat_payloads(path, st, opts.lenient):
        st.records += 1
        has_html = b'"HTML-Metadata"' in payload
        if not has_html and b"languages-cld2" not in payload:
            continue  # request records, non-HTML responses: no JSON parse needed
        if has_html and b"IMG@" not in payload:  # an HTML page without images ("IMG@/src", maybe as "IMG@\/src")
            st.pages += 1
            if pending is not None:
                emit(pending)
                pending = None
            continue
        try:
            if not has_html:
                if pending is not None and headers.get("WARC-Target-URI") == pending.uri:
                    pending.lang = _wat_lang(payload)
                continue
            page = _wat_page(payload)
        except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
            st.error("invalid_json", f"{(headers.get('WARC-Target-URI') or '')[:200]}: {e}")
            continue
        if page is None:
            continue
        st.pages += 1
        if pending is not None:
            emit(pending)
        page_url, rid, base_href, images = page
        page_url = page_url or headers.get("WARC-Target-URI") or ""
        pending = _PendingPage(page_url, rid, page_base(page_url, base_href), images)
        yield from sink.full_batch()
    if pending is not None:
        emit(pending)


# --------------------------------------------------------------------------- URL lists
def _url_list_batches(path: str, fmt: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Batches of a parquet/csv/tsv/jsonl file, streamed where the format allows."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with open_binary(path) as f:
            pf = pq.ParquetFile(f)
            have = [c for c in columns if c in pf.schema_arrow.names]
            yield from pf.iter_batches(batch_size=BATCH_ROWS, columns=have)
        return
    with open_binary(path) as raw:
        f = _maybe_gunzip(raw)
        if fmt in ("csv", "tsv"):
            import pyarrow.csv as pcsv

            reader = pcsv.open_csv(
                f, parse_options=pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in columns}),
            )
            yield from reader
        else:
            rows = []
            for line in f:
                if line.strip():
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        obj = None
                    rows.append(obj if isinstance(obj, dict) else {"__bad__": True})
                if len(rows) >= BATCH_ROWS:
                    yield pa.RecordBatch.from_pylist([{c: r.get(c) for c in columns + ["__bad__"]} for r in rows])
                    rows = []
            if rows:
                yield pa.RecordBatch.from_pylist([{c: r.get(c) for c in columns + ["__bad__"]} for r in rows])


def extract_url_list(path: str, fmt: str, sink: PairSink, opts: Options) -> Iterator[pa.RecordBatch]:
    """Rows of a URL list (img2dataset's url_col / caption_col) as candidates; dirty rows dropped."""
    st = sink.stats
    row = 0
    seen_cols = False
    for batch in _url_list_batches(path, fmt, [opts.url_col, opts.caption_col]):
        names = batch.schema.names
        if opts.url_col not in names:
            if batch.num_rows:
                st.error("no_url_column", f"column {opts.url_col!r} not in {names[:20]}")
                return
            continue
        seen_cols = True
        urls = batch.column(names.index(opts.url_col)).to_pylist()
        caps = batch.column(names.index(opts.caption_col)).to_pylist() if opts.caption_col in names else [None] * len(urls)
        bad = batch.column(names.index("__bad__")).to_pylist() if "__bad__" in names else [None] * len(urls)
        st.records += len(urls)
        items, ids = [], []
        for u, c, b in zip(urls, caps, bad):
            if b:
                st.error("invalid_json", f"line {row + 1}")
            else:
                items.append((u if isinstance(u, str) else None, c if isinstance(c, str) else None, None))
                ids.append(str(row))
            row += 1
        sink.add_rows(items, ids)
        yield from sink.full_batch()
    if not seen_cols and st.records == 0:
        st.error("empty_file", path)


# --------------------------------------------------------------------------- one file
@contextmanager
def _fewer_gc_passes(young: int = 10_000):
    """Reading a file makes millions of short-lived objects (parsed JSON, strings) that reference
    counting frees; the cyclic collector's default pass every 700 allocations cost ~15% of WAT
    extraction time for nothing (measured), so it runs less often while a file is read."""
    old = gc.get_threshold()
    gc.set_threshold(max(young, old[0]), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def extract_file(path: str, fmt: str, opts: Options, stats: FileStats | None = None) -> Iterator[pa.RecordBatch]:
    """All candidate batches of one input file. Errors are counted in ``stats``, never raised."""
    st = stats or FileStats(path)
    t0 = time.perf_counter()
    st.format = fmt = detect_format(path, fmt)
    sink = PairSink(path, st, opts, unescape=fmt != "warc",  # the HTML parser decoded the WARC's entities
                    caption_source="caption" if fmt in ("parquet", "csv", "tsv", "jsonl") else "alt")
    if fmt == "wat":
        gen = extract_wat(path, sink, opts)
    elif fmt == "warc":
        gen = extract_warc(path, sink, opts)
    elif fmt in ("parquet", "csv", "tsv", "jsonl"):
        gen = extract_url_list(path, fmt, sink, opts)
    else:
        st.error("unknown_format", path)
        gen = iter(())
    try:
        with _fewer_gc_passes():
            yield from gen
    except (OSError, EOFError, zlib.error, ValueError, pa.ArrowException) as e:
        st.error("read_error", f"{type(e).__name__}: {e}")
    last = sink.flush()
    if last is not None:
        yield last
    if st.records == 0 and not st.errors:
        st.error("empty_file", path)
    st.seconds += time.perf_counter() - t0


# --------------------------------------------------------------------------- inputs
def _read_paths_file(path: str, prefix: str) -> list[str]:
    with open_binary(path) as raw:
        f = _maybe_gunzip(raw)
        lines = [ln.decode("utf-8").strip() for ln in f]
    folder = path.rsplit("/", 1)[0] if "/" in path else "."
    out = []
    for ln in lines:
        if not ln or ln.startswith("#"):
            continue
        if prefix:
            out.append(prefix.rstrip("/") + "/" + ln.lstrip("/"))
        elif "://" in ln or ln.startswith("/"):
            out.append(ln)
        else:
            out.append(f"{folder}/{ln}")
    return out


def resolve_inputs(inputs: list[str], path_prefix: str = "") -> list[str]:
    """Expand globs, folders and paths files (CC's ``wat.paths.gz``) into a sorted file list."""
    files: list[str] = []
    for item in inputs:
        name = item.rstrip("/").rsplit("/", 1)[-1]
        if name.endswith((".paths", ".paths.gz", ".txt")) and not any(ch in item for ch in "*?["):
            storage.require_exists(item, "paths file")
            files.extend(_read_paths_file(item, path_prefix))
            continue
        if item.startswith(("http://", "https://")):
            files.append(item)
            continue
        import fsspec

        fs, p = fsspec.core.url_to_fs(item, **storage.storage_options(item))  # fs_for would expand the glob
        proto = item.split("://", 1)[0] + "://" if "://" in item else ""
        if any(ch in item for ch in "*?["):
            found = sorted(fs.glob(p))
            if not found:
                raise UserError(f"no input files match {item}")
        elif fs.isdir(p):
            found = sorted(x for x in fs.find(p) if not x.rsplit("/", 1)[-1].startswith(("_", ".")))
            if not found:
                raise UserError(f"input folder is empty: {item}")
        elif fs.exists(p):
            found = [p]
        else:
            raise UserError(f"input not found: {item}")
        files.extend(x if not proto or x.startswith(proto) else proto + x for x in found)
    # keep order, drop repeats
    return list(dict.fromkeys(files))


def default_inputs(cfg) -> list[str]:
    """The sample web's crawl (WARC or WAT, config extract.sample_source)."""
    name = "crawl.warc.wat.gz" if cfg.extract.sample_source == "wat" else "crawl.warc.gz"
    return [f"{cfg.path('sample').rstrip('/')}/{name}"]


# --------------------------------------------------------------------------- the Spark stage
def _task(stats_dir: str, opts: Options, fmt: str):
    """The mapInArrow function: each partition holds one (idx, path); yields its candidate batches."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for b in batches:
            for idx, path in zip(b.column("idx").to_pylist(), b.column("path").to_pylist()):
                st = FileStats(path)
                yield from extract_file(path, fmt, opts, st)
                storage.write_json(f"{stats_dir}/{idx:06d}.json", st.as_dict())

    return run


def aggregate(per_file: list[dict[str, Any]]) -> tuple[Counter, Counter, dict[str, int]]:
    drops, errors, totals = Counter(), Counter(), Counter()
    for d in per_file:
        drops.update(d["drops"])
        errors.update(d["errors"])
        for k in ("records", "pages", "images", "pairs"):
            totals[k] += d[k]
    return drops, errors, dict(totals)


def _clean_own_temporaries(out: str) -> None:
    """Remove what killed earlier attempts of this output left (``<out>.tmp-*``, ``<out>.filestats-*``)."""
    fs, p = storage.fs_for(out)
    parent, name = p.rsplit("/", 1) if "/" in p else (".", p)
    if not fs.exists(parent):
        return
    for entry in fs.ls(parent, detail=False):
        if entry.rsplit("/", 1)[-1].startswith((f"{name}.tmp-", f"{name}.filestats-")):
            fs.rm(entry, recursive=True)


def run_extract(cfg, spark=None, inputs: list[str] | None = None, output: str | None = None,
                overwrite: bool = False) -> dict[str, Any]:
    """Extract candidates from the configured inputs into ``output`` (default candidates/); returns stats."""
    import uuid

    from pyspark.sql import functions as F

    from pipeline.spark import get_spark
    from pipeline.stats import StageStats, read_stats
    from schemas import CANDIDATES, to_spark, validate_spark

    ec = cfg.extract
    out = (output or cfg.path("candidates")).rstrip("/")
    if storage.is_complete(out) and not overwrite:
        log.info(f"extract: {out} is complete, skipping (use --overwrite to redo)")
        return read_stats(out) or {}
    if not (inputs or ec.inputs):
        inputs = default_inputs(cfg)
        if not storage.exists(inputs[0]):
            raise UserError(f"extract: no inputs given and no sample crawl at {inputs[0]}: "
                            "run `wit sample` first, or pass WARC/WAT files or URL lists")
    files = resolve_inputs(inputs or ec.inputs, ec.path_prefix)
    if not files:
        raise UserError("extract: no input files")
    stats = StageStats("extract")
    spark = spark or get_spark(cfg.spark)
    log.info(f"extract: {len(files)} input file(s) → {out}")
    opts = Options.from_config(ec)
    stats_dir = f"{out}.filestats-{uuid.uuid4().hex[:8]}"
    _clean_own_temporaries(out)
    try:
        with storage.atomic_path(out) as tmp:
            rdd = spark.sparkContext.parallelize(list(enumerate(files)), len(files))
            paths = spark.createDataFrame(rdd, "idx int, path string")
            pairs = paths.mapInArrow(_task(stats_dir, opts, ec.input_format), to_spark(CANDIDATES))
            rest = [c for c in CANDIDATES.names if c != "uid"]
            dedup = (pairs.groupBy("uid").agg(F.min(F.struct(*rest)).alias("r")).select("uid", *[f"r.{c}" for c in rest]))
            validate_spark(dedup, CANDIDATES)
            dedup.write.parquet(storage.to_spark_path(tmp))
            n_out = spark.read.parquet(storage.to_spark_path(tmp)).count()
            fs, sp = storage.fs_for(stats_dir)
            per_file = [storage.read_json(f"{stats_dir}/{n.rsplit('/', 1)[-1]}") for n in sorted(fs.ls(sp, detail=False))] \
                if fs.exists(sp) else []
            drops, errors, totals = aggregate(per_file)
            stats.drops.update(drops)
            stats.drop("duplicate", totals.get("pairs", 0) - n_out)
            stats.input_rows, stats.output_rows = totals.get("images", 0), n_out
            stats.extra = {"files": len(files), **totals, "errors": dict(errors),
                           "strict": ec.strict, "lenient": ec.lenient, "per_file": per_file}
            if ec.strict and errors:
                bad = [f"{d['path']}: {', '.join(f'{k}={v}' for k, v in d['errors'].items())}" for d in per_file if d["errors"]]
                raise UserError(f"extract --strict: {sum(errors.values())} input error(s) in {len(bad)} file(s): "
                                + "; ".join(bad[:5]))
            result = stats.write(tmp)
    finally:
        storage.remove(stats_dir)
    storage.mark_complete(out)
    if errors:
        log.warn(f"extract: input errors (not fatal; --strict makes them fatal): {dict(errors)}")
    return result


# --------------------------------------------------------------------------- CLI
def register(sub, common) -> None:
    from pipeline.cli import flag

    p = sub.add_parser(
        "extract", parents=[common], help="WARC/WAT files and URL lists -> candidate (image URL, text) pairs",
        description="Read Common Crawl WARC/WAT files (or URL lists: parquet/csv/tsv/jsonl) and write every "
        "(absolute image URL, alt or title text) pair as the candidates dataset (output_dir/candidates, "
        "Parquet) with _stats.json (records, pages, pairs, drops and input errors by reason, per file). "
        "Inputs: files, globs, folders, fsspec URLs, or a paths file such as CC's wat.paths.gz. "
        "Default input: the sample web's crawl (wit sample).",
    )
    p.add_argument("inputs", nargs="*", help="input files/globs/URLs (default: config extract.inputs or the sample)")
    flag(p, "--format", key="extract.input_format", choices=["auto", *FORMATS])
    flag(p, "--path-prefix", key="extract.path_prefix", help="prefix for the relative paths of a paths file")
    flag(p, "--url-col", key="extract.url_col")
    flag(p, "--caption-col", key="extract.caption_col")
    flag(p, "--max-text-length", key="extract.max_text_length", type=int)
    flag(p, "--sample-source", key="extract.sample_source", choices=["warc", "wat"])
    flag(p, "--strict", key="extract.strict", action="store_const", const=True,
         help="fail (exit 2) when any input has errors (truncated records, bad Content-Length, bad JSON …)")
    flag(p, "--no-lenient", key="extract.lenient", action="store_const", const=False,
         help="skip WAT records whose Content-Length is wrong instead of reading their JSON line")
    p.add_argument("--output", help="output folder (default: <output_dir>/candidates)")
    p.add_argument("--overwrite", action="store_true", help="redo a complete output")
    p.set_defaults(func=_cli)


def _cli(args, cfg) -> int:
    from pipeline.stats import summary_line

    d = run_extract(cfg, inputs=args.inputs or None, output=args.output, overwrite=args.overwrite)
    if d:
        print(summary_line(d))
    return 0
