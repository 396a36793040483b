"""WARC reader: every ``<img>`` of every HTML response (FastWARC, the lenient line reader from where it
fails; resiliparse for charsets; the HTML parser chosen by config extract.html_parser), with the page's
CC language when a metadata record follows; pages that opt out of AI training give none (opt_outs.py)."""

from __future__ import annotations

import codecs
import re
import zlib
from collections.abc import Callable, Iterator

import pyarrow as pa

from pipeline.extract.opt_outs import CONSENT_HEADERS, warc_page_opt_out
from pipeline.extract.records import read_records
from pipeline.extract.sink import Options, PairSink, PendingPage, cld2_lang
from pipeline.extract.urls import largest_srcset, page_base, target_uri

_CHARSET_RE = re.compile(r"charset\s*=\s*[\"']?([\w.:-]+)", re.I)
_HTML_SNIFF_RE = re.compile(rb"<\s*(!doctype\s+html|html|head|body|img)\b", re.I)


def _parse_http(block: bytes) -> tuple[bytes, dict[str, str], bytes] | None:
    """(status line, lower-cased headers we need, body) of an HTTP response block. The header block
    ends at the first empty line, whether its line ends are CRLF or a bare LF (some crawlers store
    those): the body may hold the other kind of blank line further on."""
    # The first empty line starts at the first "\n\r\n" (after a CRLF line) or at an earlier "\n\n"
    # (after a bare-LF line): two bounded finds, faster than a regex on every response.
    crlf = block.find(b"\n\r\n")
    lf = block.find(b"\n\n", 0, crlf + 1 if crlf >= 0 else len(block))
    if lf >= 0:
        end, body = lf, lf + 2
    elif crlf >= 0:
        end, body = crlf, crlf + 3
    else:
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
        elif key in CONSENT_HEADERS:  # may repeat (X-Robots-Tag): kept apart, one value a line
            value = v.strip().decode("latin-1")
            headers[key] = f"{headers[key]}\n{value}" if key in headers else value
    return status, headers, block[body:]


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

    Iterating its element list is quadratic in the number of <img> (slow on image-heavy pages),
    so selectolax (the same lexbor engine) is the default.
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


# The records the WARC reader reads (metadata: the page language CC puts there).
_WARC_TYPES = frozenset({"response", "resource", "metadata"})

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


def extract_warc(path: str, sink: PairSink, opts: Options) -> Iterator[pa.RecordBatch]:
    """Every <img> of every HTML response in a WARC file (FastWARC, then the lenient reader if needed)."""
    st = sink.stats
    parse = PARSERS[opts.parser]
    pending: PendingPage | None = None

    def emit(p: PendingPage):
        images = [(image_src(src, data_src, srcset), alt, title) for src, data_src, srcset, alt, title in p.images]
        sink.add_page(images, p.base, p.uri, p.record_id, p.lang)

    for rtype, h, block in read_records(path, st, opts.lenient, _WARC_TYPES):
        uri = target_uri(h.get("WARC-Target-URI"))
        if rtype == "metadata":
            if pending is not None and uri == pending.uri:
                for line in block.split(b"\n"):
                    if line.startswith(b"languages-cld2:"):
                        pending.lang = cld2_lang(line[15:].decode("utf-8", "replace"))
            continue
        st.responses += 1
        if rtype == "resource":
            ctype, body, headers = h.get("Content-Type") or "", block, {}
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
        if rtype == "resource" and not _is_html(ctype, body):
            continue
        st.pages += 1
        try:
            html = decode_page(body, ctype)
            base, images = parse(html)
        except Exception as e:  # noqa: BLE001 — malformed HTML must not stop the file
            st.error("html_parse_error", f"{uri}: {e}")
            continue
        if pending is not None:
            emit(pending)
            pending = None
        if images and opts.honour_opt_outs and (reason := warc_page_opt_out(html, headers, opts.user_agent)):
            sink.drop_page(len(images), reason)
            continue
        pending = PendingPage(uri, h.get("WARC-Record-ID"), page_base(uri, base), images)
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
