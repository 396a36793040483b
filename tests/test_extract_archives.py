"""Extraction on archives as other crawlers write them: WARC-Target-URI in angle brackets, HTTP headers
ended by a bare LF, WAT/WARC files FastWARC fails on part-way (the lenient reader takes over at the
right record), and archives with records but no response. Every test writes its own archives."""

from __future__ import annotations

import gzip
import io
from collections import Counter

import pytest

from pipeline.extract import FileStats, read_records, target_uri
from pipeline.extract.warc import _parse_http
from tests.test_extract import http_response, pairs_of, warc_record, wat_json, write_warc

CLD2_FR = b'languages-cld2: {"reliable":true,"languages":[{"code":"fr","text-bytes":90,"percent":99}]}\r\n'
RELATIVE_IMGS = (b'<html><body><img src="a.jpg" alt="same folder"><img src="/b.jpg" alt="root">'
                 b'<img src="../c.jpg" alt="one up"><img src="//cdn.example.org/d.jpg" alt="protocol relative">'
                 b'<img src="e.jpg"></body></html>')
RELATIVE_PAIRS = {("http://example.org/dir/a.jpg", "same folder"), ("http://example.org/b.jpg", "root"),
                  ("http://example.org/c.jpg", "one up"), ("http://cdn.example.org/d.jpg", "protocol relative")}


def _rows(table) -> set[tuple[str, str, str]]:
    return {(r["url"], r["text"], r["page_url"]) for r in table.to_pylist()}


# --------------------------------------------------------------------------- 1. bracketed WARC-Target-URI
@pytest.mark.parametrize("value,want", [
    ("<https://example.org/page>", "https://example.org/page"), (" <https://example.org/page> ", "https://example.org/page"),
    ("https://example.org/page", "https://example.org/page"), ("<>", ""), ("", ""), (None, ""),
    ("https://example.org/<odd>", "https://example.org/<odd>"),  # brackets only around the whole value
])
def test_target_uri_strips_the_brackets_of_warc_1_0(value, want):
    assert target_uri(value) == want


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"], ids=["crlf", "lf-lenient-reader"])
def test_bracketed_target_uri_warc_resolves_relative_images_and_keeps_the_language(tmp_path, eol):
    """Response, resource and metadata records all name their page in brackets; the LF variant is read
    by the lenient line reader (FastWARC fails on it), which must strip them the same way."""
    page = "<http://example.org/dir/page.html>"
    resource = b'<html><body><img src="r.png" alt="from a resource"></body></html>'
    recs = [
        warc_record("warcinfo", "", b"software: other-crawler\r\n", "application/warc-fields", eol=eol),
        warc_record("request", page, b"GET /dir/page.html HTTP/1.1\r\n\r\n", "application/http; msgtype=request", eol=eol),
        warc_record("response", page, http_response(RELATIVE_IMGS), "application/http; msgtype=response", eol=eol),
        warc_record("metadata", page, CLD2_FR, "application/warc-fields", eol=eol),
        warc_record("resource", "<http://example.org/files/doc.html>", resource, "text/html", eol=eol),
    ]
    path = tmp_path / "brackets.warc.gz"
    write_warc(path, recs)
    table, st = pairs_of(path)
    assert _rows(table) == {(u, t, "http://example.org/dir/page.html") for u, t in RELATIVE_PAIRS} | {
        ("http://example.org/files/r.png", "from a resource", "http://example.org/files/doc.html")}
    assert set(table.column("page_lang").to_pylist()) == {"fr", None}  # fr: the page's metadata record matched
    assert {r["url"]: r["page_lang"] for r in table.to_pylist()}["http://example.org/dir/a.jpg"] == "fr"
    assert st.drops == Counter(empty_text=1) and st.records == 5 and st.responses == 2
    if eol == b"\n":  # LF line ends: bad_record_end per record, read anyway (lenient)
        assert st.records_fast == 0 and st.records_lenient == 5 and set(st.errors) == {"bad_record_end"}
    else:
        assert st.records_fast == 5 and st.records_lenient == 0 and not st.errors


def test_bracketed_target_uri_wat_in_header_and_envelope(tmp_path):
    """The WAT record's own header and the envelope's copy of the WARC header: both may carry brackets."""
    links = [{"path": "IMG@/src", "url": u} for u in ("a.jpg", "/b.jpg", "../c.jpg", "//cdn.example.org/d.jpg")]
    for link, alt in zip(links, ("same folder", "root", "one up", "protocol relative")):
        link["alt"] = alt
    in_envelope = wat_json("<http://example.org/dir/page.html>", links)
    only_in_header = in_envelope.replace(b'"WARC-Target-URI": "<http://example.org/dir/page.html>", ', b"")
    assert only_in_header != in_envelope
    lang = (b'{"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": "<http://example.org/dir/page.html>"}, '
            b'"Payload-Metadata": {"WARC-Metadata-Metadata": {"Metadata-Records": [{"Name": "languages-cld2", '
            b'"Value": "{\\"languages\\": [{\\"code\\": \\"fr\\"}]}"}]}}}}')
    for name, payload in (("envelope", in_envelope), ("header", only_in_header)):
        data = warc_record("warcinfo", "", b"format: WAT\r\n", "application/warc-fields")
        data += warc_record("metadata", "<http://example.org/dir/page.html>", payload, "application/json")
        data += warc_record("metadata", "<http://example.org/dir/page.html>", lang, "application/json")
        path = tmp_path / f"{name}.warc.wat.gz"
        path.write_bytes(gzip.compress(data))
        table, st = pairs_of(path)
        assert _rows(table) == {(u, t, "http://example.org/dir/page.html") for u, t in RELATIVE_PAIRS}, name
        assert set(table.column("page_lang").to_pylist()) == {"fr"}, name
        assert not st.errors and st.drops == Counter(), name


# --------------------------------------------------------------------------- 2. bare-LF HTTP header ends
@pytest.mark.parametrize("head_end,in_body", [
    (b"\n", b"\r\n"),  # LF headers, a CRLF blank line later in the body (the case that lost pages)
    (b"\r\n", b"\n"),  # CRLF headers, an LF blank line later in the body
    (b"\n", b"\n"), (b"\r\n", b"\r\n"),
])
def test_http_header_block_ends_at_the_first_blank_line(head_end, in_body):
    body = b"<p>first part</p>" + in_body * 2 + b"<p>second part</p>"
    block = b"HTTP/1.1 200 OK" + head_end + b"Content-Type: text/html; charset=utf-8" + head_end * 2 + body
    status, headers, got = _parse_http(block)
    assert status == b"HTTP/1.1 200 OK" and headers == {"content-type": "text/html; charset=utf-8"} and got == body


def test_http_header_block_with_mixed_line_ends_and_none():
    assert _parse_http(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\n<b>x</b>\r\n\r\n")[2] == b"<b>x</b>\r\n\r\n"
    assert _parse_http(b"HTTP/1.1 200 OK\nContent-Type: text/html\n\r\n<b>x</b>")[2] == b"<b>x</b>"
    assert _parse_http(b"HTTP/1.1 200 OK\r\nContent-Type: text/html") is None  # no end of the header block


@pytest.mark.parametrize("head_end,in_body", [(b"\n", b"\r\n"), (b"\r\n", b"\n")], ids=["lf-head", "crlf-head"])
def test_every_image_of_a_page_whose_header_and_body_blank_lines_differ(tmp_path, head_end, in_body):
    """Images before and after the body's blank line, each with alt text, are all found."""
    body = (b'<html><body><img src="before.jpg" alt="before the blank line">' + in_body * 2
            + b'<p>after</p>' + in_body * 2 + b'<img src="after.jpg" alt="after the blank line"></body></html>')
    block = b"HTTP/1.1 200 OK" + head_end + b"Content-Type: text/html" + head_end * 2 + body
    path = tmp_path / "lf.warc.gz"
    write_warc(path, [warc_record("response", "http://example.org/p/", block, "application/http; msgtype=response")])
    table, st = pairs_of(path)
    assert _rows(table) == {("http://example.org/p/before.jpg", "before the blank line", "http://example.org/p/"),
                            ("http://example.org/p/after.jpg", "after the blank line", "http://example.org/p/")}
    assert st.pages == 1 and not st.errors


# --------------------------------------------------------------------------- 3. FastWARC fails part-way
def _fastwarc_error(data: bytes) -> str | None:
    """The error FastWARC itself raises reading ``data`` (None: it reads to the end)."""
    from fastwarc.warc import ArchiveIterator

    try:
        for rec in ArchiveIterator(io.BytesIO(data), parse_http=False):
            rec.reader.read()
    except OSError as e:
        return str(e)
    return None


def _wat_pages(first: int, n: int, eol: bytes = b"\r\n", bad_lengths: dict[int, int] | None = None) -> bytes:
    """WAT records of pages first..first+n-1, one image each (its alt names the page); ``bad_lengths``:
    page → a wrong Content-Length."""
    out = b""
    for i in range(first, first + n):
        payload = wat_json(f"http://p{i}.org/", [{"path": "IMG@/src", "url": "img.jpg", "alt": f"page {i}"}])
        out += warc_record("metadata", f"http://p{i}.org/", payload, "application/json",
                           length=(bad_lengths or {}).get(i), eol=eol)
    return out


def test_wat_fastwarc_oserror_part_way_hands_over_at_the_right_record(tmp_path):
    """120 well-formed records, then 120 with LF line ends and some wrong Content-Lengths (a file cut
    and joined by lines): FastWARC raises ``Maximum header length exceeded`` at the first LF record.
    The line reader reads on from the last record FastWARC could not confirm: every page once."""
    info = warc_record("warcinfo", "", b"format: WAT\r\n", "application/warc-fields")
    wrong = {130: 100, 170: 5000}  # too short, too long
    data = info + _wat_pages(0, 120) + _wat_pages(120, 120, eol=b"\n", bad_lengths=wrong)
    assert _fastwarc_error(data) == "Maximum header length exceeded."
    path = tmp_path / "joined.warc.wat.gz"
    path.write_bytes(gzip.compress(data))
    table, st = pairs_of(path)
    texts = table.column("text").to_pylist()
    assert sorted(texts) == sorted(f"page {i}" for i in range(240))  # all there, none twice
    assert {(r["url"], r["page_url"]) for r in table.to_pylist() if r["text"] == "page 130"} == {
        ("http://p130.org/img.jpg", "http://p130.org/")}
    # FastWARC: the warcinfo and pages 0..118; page 119 is confirmed by no next record, so the line reader reads it
    assert (st.records, st.records_fast, st.records_lenient) == (241, 120, 121)
    assert st.fallback == "OSError: Maximum header length exceeded."
    assert st.errors == Counter(bad_record_end=118, bad_content_length=2) and st.pages == st.responses == 240
    # not lenient: only the records whose Content-Length and end are right
    table, st = pairs_of(path, lenient=False)
    assert sorted(table.column("text").to_pylist()) == sorted(f"page {i}" for i in range(120))


def test_wat_fastwarc_oserror_at_the_first_record_loses_nothing(tmp_path):
    """A WAT with LF line ends throughout and a wrong Content-Length: FastWARC fails before its first record."""
    data = _wat_pages(0, 150, eol=b"\n", bad_lengths={3: 40})
    assert _fastwarc_error(data) == "Maximum header length exceeded."
    path = tmp_path / "lf.wat"
    path.write_bytes(data)
    table, st = pairs_of(path)
    assert sorted(table.column("text").to_pylist()) == sorted(f"page {i}" for i in range(150))
    assert (st.records_fast, st.records_lenient) == (0, 150) and st.errors["bad_content_length"] == 1


def test_warc_invalid_header_after_a_short_content_length_reads_the_whole_record(tmp_path):
    """A response whose Content-Length is too short: FastWARC reads the cut block, then raises
    ``Invalid WARC header`` inside the rest. The line reader rereads that response whole (every image)
    and the records after it; the records before it stay FastWARC's."""
    def page(i: int, n_imgs: int = 2) -> bytes:
        return http_response(b"<html><body>" + b"".join(
            b'<img src="/%d/%d.jpg" alt="page %d image %d">' % (i, k, i, k) for k in range(n_imgs)) + b"</body></html>")

    recs = [warc_record("response", f"http://p{i}.org/", page(i), "application/http; msgtype=response") for i in range(5)]
    recs[2] = warc_record("response", "<http://p2.org/>", page(2, 6), "application/http; msgtype=response", length=120)
    assert _fastwarc_error(b"".join(recs)) == "Invalid WARC header"
    for name, write in (("plain.warc", lambda p: p.write_bytes(b"".join(recs))), ("members.warc.gz", lambda p: write_warc(p, recs))):
        path = tmp_path / name
        write(path)
        table, st = pairs_of(path)
        want = {(f"http://p{i}.org/{i}/{k}.jpg", f"page {i} image {k}", f"http://p{i}.org/")
                for i in range(5) for k in range(6 if i == 2 else 2)}
        assert _rows(table) == want and table.num_rows == len(want), name
        assert (st.records_fast, st.records_lenient) == (2, 3) and st.fallback == "OSError: Invalid WARC header", name
        assert st.errors == Counter(bad_content_length=1), name


def test_read_records_yields_each_record_once_in_order(tmp_path):
    """The hand-over seen from the record reader itself: the target URIs in file order, no repeats."""
    data = _wat_pages(0, 60) + _wat_pages(60, 60, eol=b"\n")
    path = tmp_path / "order.wat"
    path.write_bytes(data)
    st = FileStats(str(path))
    uris = [target_uri(h.get("WARC-Target-URI")) for _, h, _ in read_records(str(path), st)]
    assert uris == [f"http://p{i}.org/" for i in range(120)]
    assert st.records_fast + st.records_lenient == st.records == 120 and st.records_lenient >= 60


# --------------------------------------------------------------------------- 4. no responses vs empty file
def test_archives_without_responses_are_not_empty_files(tmp_path):
    request = warc_record("request", "http://example.org/", b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n",
                          "application/http; msgtype=request")
    write_warc(tmp_path / "requests.warc.gz", [request, request])
    conversion = warc_record("conversion", "http://example.org/", b"plain text of the page", "text/plain")
    (tmp_path / "text.warc.wet").write_bytes(conversion)
    wat_request = (b'{"Envelope": {"WARC-Header-Metadata": {"WARC-Type": "request", "WARC-Target-URI": "http://example.org/"},'
                   b' "Payload-Metadata": {"HTTP-Request-Metadata": {"Request-Message": {"Method": "GET"}}}}}')
    (tmp_path / "requests.warc.wat").write_bytes(warc_record("metadata", "http://example.org/", wat_request, "application/json"))
    for name, fmt in (("requests.warc.gz", "auto"), ("text.warc.wet", "warc"), ("requests.warc.wat", "auto")):
        table, st = pairs_of(tmp_path / name, fmt)
        assert table.num_rows == 0 and st.records >= 1 and st.errors == Counter(no_responses=1), name
    for name, content in (("empty.warc.gz", b""), ("empty.warc.wat.gz", b""), ("gzip-of-nothing.warc.gz", gzip.compress(b""))):
        (tmp_path / name).write_bytes(content)
        table, st = pairs_of(tmp_path / name)
        assert st.records == 0 and st.errors == Counter(empty_file=1), name
    (tmp_path / "junk.warc").write_bytes(b"this is not a warc file\n" * 100)
    assert pairs_of(tmp_path / "junk.warc")[1].errors == Counter(not_warc=1)


def test_a_response_without_html_is_a_response(tmp_path):
    """An archive of images only has responses: nothing to extract, and nothing to report."""
    write_warc(tmp_path / "images.warc.gz", [warc_record("response", "http://example.org/x.jpg",
                                                         http_response(b"\xff\xd8\xff", "image/jpeg"), "application/http")])
    table, st = pairs_of(tmp_path / "images.warc.gz")
    assert table.num_rows == 0 and st.responses == 1 and st.pages == 0 and not st.errors


# --------------------------------------------------------------------------- real files
def test_real_archives_read_by_fastwarc_or_reported(shared_data):
    """Well-formed real archives never leave FastWARC; those without a response say so."""
    for name in ("resiliparse_warcfile.warc.gz", "npmwarc_CC-MAIN-2014-35.warc", "npmwarc_CC-MAIN-2014-35.warc.wat",
                 "cc_whirlwind.warc.gz", "ukwa_wikipedia-mona-lisa.warc.gz"):
        table, st = pairs_of(shared_data / "warc" / name)
        assert st.records_fast == st.records > 0 and st.records_lenient == 0 and not st.fallback, name
        assert st.responses > 0 and not st.errors and table.num_rows > 0, name
    for name in ("npmwarc_CC-MAIN-2014-35.warc.wet", "cc_whirlwind.warc.wat.gz"):  # WET conversions; a WAT of a request
        table, st = pairs_of(shared_data / "warc" / name)
        assert st.records > 0 and st.responses == 0 and st.errors == Counter(no_responses=1), name
