"""WAT reader: every ``IMG@/src`` link of a WAT's HTML metadata, resolved against ``<base>`` or the page
URL (none from pages that opt out of AI training in ``Head.Metas`` or their headers: opt_outs.py). FastWARC + orjson; from where FastWARC fails or doubts, a line reader that tolerates wrong
Content-Length values (lenient mode) reads the rest of the file."""

from __future__ import annotations

import json
from collections.abc import Iterator

import orjson
import pyarrow as pa

from pipeline.extract.opt_outs import wat_page_opt_out
from pipeline.extract.records import read_records
from pipeline.extract.sink import Options, PairSink, PendingPage, cld2_lang
from pipeline.extract.urls import page_base, target_uri


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
            return cld2_lang(str(item.get("Value") or ""))
    return None


def _wat_page(payload: bytes, opts: Options) -> tuple[str | None, str | None, str | None, list[tuple], str | None] | None:
    """(page URL, record id, <base href>, [(url, alt, title)], opt-out reason or None) of a WAT response
    record, None if no HTML. Parsing the whole record with orjson beats simdjson's lazy proxies here
    (measured on sample and real CC records): most of a record is the Links list, which is read in full anyway."""
    env = _json_object(payload)["Envelope"]
    http = (env.get("Payload-Metadata") or {}).get("HTTP-Response-Metadata") or {}
    meta = http.get("HTML-Metadata")
    if meta is None:
        return None
    images = [(lk.get("url"), lk.get("alt"), lk.get("title")) for lk in meta.get("Links") or () if lk.get("path") == "IMG@/src"]
    base = (meta.get("Head") or {}).get("Base")
    whm = env.get("WARC-Header-Metadata") or {}
    reason = wat_page_opt_out(payload, meta, http, opts.user_agent) if opts.honour_opt_outs else None
    return target_uri(whm.get("WARC-Target-URI")), whm.get("WARC-Record-ID"), base, images, reason


_JSON_ENDS = (b"}", b"}\r\n", b"}\n")


def _wat_looks_right(rtype: str, payload: bytes) -> bool:
    """Whether a record FastWARC read is whole: no next record inside it (a Content-Length too long)
    and, for a metadata record, one JSON object (a Content-Length too short cuts it)."""
    first_lf = payload.find(b"\n")  # one byte: memchr, many times faster than looking for "\nWARC/" itself
    if 0 <= first_lf < len(payload) - 2 and b"\nWARC/" in payload[first_lf:]:
        return False  # (a payload is one JSON line: most have no line end before their last two bytes)
    return rtype != "metadata" or (payload[:1] == b"{" and payload.endswith(_JSON_ENDS))


def extract_wat(path: str, sink: PairSink, opts: Options) -> Iterator[pa.RecordBatch]:
    """Every IMG@/src link of the WAT's HTML metadata, resolved against <base> or the page URL."""
    st = sink.stats
    pending: PendingPage | None = None

    def emit(p: PendingPage):
        sink.add_page(p.images, p.base, p.uri, p.record_id, p.lang)

    for _, headers, payload in read_records(path, st, opts.lenient, looks_right=_wat_looks_right):
        has_html = b'"HTML-Metadata"' in payload
        if has_html:
            st.responses += 1
        else:
            if b'"HTTP-Response-Metadata"' in payload:
                st.responses += 1
            if b"languages-cld2" not in payload:
                continue  # request records, non-HTML responses: no JSON parse needed
        if has_html and b"IMG@" not in payload:  # an HTML page without images ("IMG@/src", maybe as "IMG@\/src")
            st.pages += 1
            if pending is not None:
                emit(pending)
                pending = None
            continue
        try:
            if not has_html:
                if pending is not None and target_uri(headers.get("WARC-Target-URI")) == pending.uri:
                    pending.lang = _wat_lang(payload)
                continue
            page = _wat_page(payload, opts)
        except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
            st.error("invalid_json", f"{target_uri(headers.get('WARC-Target-URI'))[:200]}: {e}")
            continue
        if page is None:
            continue
        st.pages += 1
        if pending is not None:
            emit(pending)
            pending = None
        page_url, rid, base_href, images, reason = page
        if reason:
            sink.drop_page(len(images), reason)
            continue
        page_url = page_url or target_uri(headers.get("WARC-Target-URI"))
        pending = PendingPage(page_url, rid, page_base(page_url, base_href), images)
        yield from sink.full_batch()
    if pending is not None:
        emit(pending)
