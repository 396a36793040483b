"""WARC record reading for the WARC and WAT readers: FastWARC for the well-formed part of a file,
then a lenient line reader for the rest.

FastWARC is fast but stops or raises at the first record it cannot read: a wrong Content-Length
makes it read the next record's header inside a payload, or a payload as a header ("Invalid WARC
header", "Maximum header length exceeded"); LF line ends give records of unknown type; a cut gzip
stream ends in a short block. A record counts as read by FastWARC only once the record after it
(or the end of the file) has been read and looks right; at the first error or doubt, the line
reader reads the file from that record on, so no record is read twice or lost.

The line reader finds records by their ``WARC/x.y`` line (a WAT payload is one JSON line; a WARC
payload rarely holds a line that is exactly ``WARC/1.0``) and keeps records whose Content-Length is
wrong when lenient, counting each problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from pipeline.extract.inputs import open_binary, read_lines
from pipeline.extract.sink import FileStats

_RECORD_TYPES = ("warcinfo", "response", "resource", "request", "metadata", "revisit", "conversion", "continuation")
_VERSION_LINE = re.compile(rb"WARC/\d+\.\d+[ \t]*\r?\n?")


class LenientHeaders(dict):
    """WARC headers read by the line reader (lower-cased names), looked up in any case like FastWARC's."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class _Handover(Exception):
    """FastWARC cannot be trusted from the last unconfirmed record on: the line reader reads the rest."""


def read_records(path: str, st: FileStats, lenient: bool = True, types: frozenset[str] | None = None,
                 looks_right: Callable[[str, bytes], bool] | None = None) -> Iterator[tuple[str, Any, bytes]]:
    """(WARC-Type, headers, block) of each record of a WARC or WAT file whose type is in ``types``
    (None: all), in order; ``headers.get(name)`` looks a header up in any case.

    ``looks_right(type, block)`` may reject a block FastWARC read (e.g. a WAT payload that is not one
    JSON object): the line reader then takes over. Counts every record, of any type, in
    ``st.records``, ``st.records_fast`` and ``st.records_lenient``; ``st.fallback`` says why the line
    reader took over (empty when FastWARC read the whole file).
    """
    with open_binary(path) as f:
        yield from _fast_records(f, st, types, looks_right)
    if not st.fallback:
        return
    with open_binary(path) as raw:
        for rec in lenient_records(read_lines(raw, st), st, lenient, skip=st.records_fast):
            if types is None or rec[0] in types:
                yield rec


def _fast_records(f, st: FileStats, types: frozenset[str] | None,
                  looks_right: Callable[[str, bytes], bool] | None) -> Iterator[tuple[str, Any, bytes]]:
    """The records FastWARC reads, each once the record after it (or the end of the file) confirms it;
    sets ``st.fallback`` where it stops and ``st.records_fast`` to the records confirmed before."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    names = {int(getattr(WarcRecordType, n)): n for n in _RECORD_TYPES}
    held = None  # the last record read, if of a wanted type: yielded once confirmed
    read = done = 0  # records read; records confirmed (counted into st at the end: cheaper than per record)
    try:
        for rec in ArchiveIterator(f, parse_http=False):
            rtype = names.get(int(rec.record_type))
            if rtype is None:
                raise _Handover("a record of unknown or no WARC-Type")
            wanted = types is None or rtype in types
            if wanted:
                block = rec.reader.read()
                if len(block) != rec.content_length:
                    raise _Handover(f"a {len(block)}-byte block, Content-Length {rec.content_length}")
                if looks_right is not None and not looks_right(rtype, block):
                    raise _Handover(f"a {rtype} record that does not look right")
            done, read = read, read + 1  # this record starts right where the last one ended: that one is whole
            if held is not None:
                yield held  # (the consumer's errors never reach this try: only a closing generator's exit, no Exception)
            held = (rtype, rec.headers, block) if wanted else None
        if f.read(1):
            raise _Handover("data after the last record FastWARC found")
        if read == 0:
            raise _Handover("no WARC record found")  # empty, or not a WARC: the line reader says which
        done = read
        if held is not None:
            yield held
    except Exception as e:  # noqa: BLE001 — any error of FastWARC (OSError: Invalid WARC header, …) hands over
        st.fallback = str(e) if isinstance(e, _Handover) else f"{type(e).__name__}: {e}"
    finally:
        st.records += done
        st.records_fast += done


def lenient_records(lines: Iterator[bytes], st: FileStats, lenient: bool = True,
                    skip: int = 0) -> Iterator[tuple[str, LenientHeaders, bytes]]:
    """(WARC-Type, headers, block) of every record after the first ``skip``, read line by line.

    A record ends where the next ``WARC/x.y`` line starts. Records whose Content-Length is wrong
    (``bad_content_length``), whose end is not CRLF CRLF (``bad_record_end``) or that the file's end
    cuts short (``truncated_record``) are counted and kept only when lenient. Counts
    ``st.records`` and ``st.records_lenient`` (every record read after the skipped ones).
    """
    headers: LenientHeaders | None = None
    in_header = False
    payload: list[bytes] = []
    seen = 0  # records started, the skipped ones included

    def finish(at_end: bool) -> tuple[bytes, bool]:
        st.records += 1
        st.records_lenient += 1
        data = b"".join(payload)
        cl = headers.get("content-length", "")
        try:
            n = int(cl)
        except ValueError:
            n = -1
        where = headers.get("warc-target-uri", "?")[:200]
        ends = data.endswith(b"\r\n\r\n") or data.endswith(b"\n\n")
        if at_end and 0 <= len(data) < n and not ends:
            st.error("truncated_record", f"{where}: {len(data)} of {n} bytes")
            return data, False
        if n < 0 or len(data) < n or data[n:n + 4].strip(b"\r\n"):
            st.error("bad_content_length", f"{where}: Content-Length {cl[:20]}, block {len(data)}")
            return (data[:-4] if data.endswith(b"\r\n\r\n") else data[:-2] if ends else data), False
        if data[n:] != b"\r\n\r\n":
            st.error("bad_record_end", f"{where}: {data[n:n + 8]!r}")
            return data[:n], False
        return data[:n], True

    def record(at_end: bool) -> Iterator[tuple[str, LenientHeaders, bytes]]:
        data, ok = finish(at_end)
        if ok or lenient:
            yield (headers.get("warc-type") or "unknown").lower(), headers, data

    for line in lines:
        if line[:5] == b"WARC/" and _VERSION_LINE.fullmatch(line):
            if headers is not None:
                yield from record(at_end=False)
            seen += 1
            headers = LenientHeaders() if seen > skip else None  # None: a record FastWARC read, passed over
            in_header, payload = True, []
        elif headers is None:
            if seen == 0 and line.strip():
                st.error("not_warc", repr(line[:80]))
                return
        elif in_header:
            if not line.strip():
                in_header = False
            else:
                k, _, v = line.partition(b":")
                headers[k.strip().lower().decode("latin-1")] = v.strip().decode("utf-8", "replace")
        else:
            payload.append(line)
    if headers is not None:
        yield from record(at_end=True)
