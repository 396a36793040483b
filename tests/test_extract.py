"""`wit extract`: clean-up rules, the WARC/WAT/URL-list readers on synthetic and real files, the Spark stage."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.errors import UserError
from pipeline.extract import (
    FileStats,
    Options,
    clean_text,
    clean_text_column,
    extract_file,
    largest_srcset,
    resolve_inputs,
    resolve_url,
    resolve_url_column,
    run_extract,
)
from pipeline.ids import make_uid
from pipeline.rules import MAX_URL_LENGTH
from pipeline.stats import STATS_FILE
from schemas import CANDIDATES, conform


def pairs_of(path, fmt="auto", **opts) -> tuple[pa.Table, FileStats]:
    st = FileStats(str(path))
    batches = list(extract_file(str(path), fmt, Options(**opts), st))
    table = pa.Table.from_batches(batches, schema=CANDIDATES)
    conform(table, CANDIDATES)
    return table, st


def read_candidates(folder) -> pa.Table:
    return ds.dataset(str(folder), format="parquet", exclude_invalid_files=True).to_table()


# --------------------------------------------------------------------------- synthetic archives
def warc_record(wtype: str, uri: str, payload: bytes, content_type: str, length: int | None = None,
                rid: str | None = None, eol: bytes = b"\r\n") -> bytes:
    rid = rid or f"<urn:uuid:{abs(hash((wtype, uri))):032x}>"
    head = [b"WARC/1.0", f"WARC-Type: {wtype}".encode(), f"WARC-Target-URI: {uri}".encode(),
            b"WARC-Date: 2024-01-01T00:00:00Z", f"WARC-Record-ID: {rid}".encode(),
            f"Content-Type: {content_type}".encode(), f"Content-Length: {len(payload) if length is None else length}".encode()]
    return eol.join(head) + eol + eol + payload + eol + eol


def http_response(body: bytes, content_type: str = "text/html") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type.encode() + b"\r\n\r\n" + body


def write_warc(path, records: list[bytes]) -> None:
    with open(path, "wb") as f:
        for r in records:
            f.write(gzip.compress(r))  # one gzip member per record, like CC


def wat_json(page: str, links: list[dict], base: str | None = None) -> bytes:
    meta: dict = {"Links": links}
    if base:
        meta["Head"] = {"Base": base}
    return json.dumps({"Envelope": {
        "WARC-Header-Metadata": {"WARC-Target-URI": page, "WARC-Record-ID": "<urn:uuid:r1>"},
        "Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": meta}}}}).encode()


# --------------------------------------------------------------------------- clean-up rules
@pytest.mark.parametrize("raw,base,want", [
    ("a.jpg", "http://x.org/p/q.html", ("http://x.org/p/a.jpg", None)),
    ("//cdn.x.org/a.jpg", "https://x.org/", ("https://cdn.x.org/a.jpg", None)),
    ("  /a.jpg#frag ", "http://x.org/p/", ("http://x.org/a.jpg", None)),
    ("HTTP://X.org/a.jpg", None, ("http://X.org/a.jpg", None)),
    ("data:image/png;base64,AAAA", "http://x.org/", (None, "data_uri")),
    ("javascript:void(0)", "http://x.org/", (None, "bad_scheme")),
    ("ftp://x.org/a.jpg", None, (None, "bad_scheme")),
    ("UNLIKELY", None, (None, "not_absolute")),
    ("", "http://x.org/", (None, "no_url")),
    (None, "http://x.org/", (None, "no_url")),
    ("http:///a.jpg", None, (None, "bad_url")),
    ("http://x.org/" + "a" * 10_000, None, (None, "url_too_long")),
    ("http://x.org/" + "a" * (MAX_URL_LENGTH - 13), None, ("http://x.org/" + "a" * (MAX_URL_LENGTH - 13), None)),
    ("http://x.org/" + "a" * (MAX_URL_LENGTH - 12), None, (None, "url_too_long")),  # the config's one length rule
])
def test_resolve_url(raw, base, want):
    assert resolve_url(raw, base) == want


def test_clean_text_of_gigantic_attributes_cleans_only_the_start_yet_gives_the_same_answer():
    """A huge attribute is cleaned from its start only; words, spaces and entities cut at the edge of
    that start must not change the answer (compared with cleaning the whole text)."""
    import html
    import random

    def whole(s: str, max_len: int, unescape: bool) -> str:
        s = html.unescape(s) if unescape and "&" in s else s
        return " ".join(s.split())[:max_len]

    rng = random.Random(0)
    pieces = ["a", "word", " ", "  ", "\n", "\xa0", "&amp;", "&nbsp;", "&#32;", "&#x20;", "&amp", "&", "&#10;",
              "&lt;b", "xyz" * 10, "&#0000000065;"]
    for _ in range(20_000):
        s = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
        max_len = rng.choice([1, 3, 5, 10, 20])  # small caps: most texts count as gigantic here
        for unescape in (True, False):
            assert clean_text(s, max_len, unescape) == whole(s, max_len, unescape), (s, max_len, unescape)
    assert clean_text(" " * 5000 + "late words", 10) == "late words"  # a start with no text: the whole is read


def test_clean_text_and_srcset():
    assert clean_text("  a &amp; b\n\t c\xa0d ", 1000) == "a & b c d"
    assert clean_text("x" * 50, 10) == "x" * 10
    assert clean_text(" \n ", 10) == "" and clean_text(None, 10) == ""
    assert clean_text("a &amp; b", 100, unescape=False) == "a &amp; b"
    assert largest_srcset("a.jpg 480w, b.jpg 1080w, c.jpg 800w") == "b.jpg"
    assert largest_srcset("a.jpg, b.jpg 2x, c.jpg 1.5x") == "b.jpg"
    assert largest_srcset("img,1.jpg 100w, img,2.jpg 200w") == "img,2.jpg"


# --------------------------------------------------------------------------- WARC reader
def test_warc_imgs_base_srcset_charsets_and_lang(tmp_path):
    page1 = ('<html><head><base href="http://cdn.example.org/static/"></head><body>'
             '<img src="a.jpg" alt=" A  red &amp; blue\ncircle ">'
             '<img src="b.jpg" alt="" title="Title only">'
             '<img src="c.jpg">'
             '<img src="small.jpg" srcset="m.jpg 640w, l.jpg 1280w" alt="srcset wins">'
             '<img src="data:image/gif;base64,R0lG" data-src="/lazy.jpg#x" alt="lazy">'
             '<img src="data:image/gif;base64,R0lG" alt="placeholder">'
             '<img src="javascript:x()" alt="js">'
             '<img alt="no src">'
             f'<img src="big.jpg" alt="{"w " * 3000}">'
             '</body></html>').encode()
    ru = "<html><body><img src='/r.jpg' alt='Красный круг'></body></html>".encode("windows-1251")
    jp = ('<html><head><meta charset="euc-jp"></head><body><img src="j.jpg" alt="赤い丸"></body></html>').encode("euc-jp")
    cld2 = b'languages-cld2: {"reliable":true,"text-bytes":100,"languages":[{"code":"ru","code-iso-639-3":"rus","text-bytes":90,"percent":99}]}\r\n'
    recs = [
        warc_record("warcinfo", "", b"software: test\r\n", "application/warc-fields"),
        warc_record("request", "http://example.org/p1.html", b"GET /p1.html HTTP/1.1\r\n\r\n", "application/http; msgtype=request"),
        warc_record("response", "http://example.org/p1.html", http_response(page1), "application/http; msgtype=response"),
        warc_record("response", "http://example.ru/p2", http_response(ru, "text/html; charset=windows-1251"),
                    "application/http; msgtype=response"),
        warc_record("metadata", "http://example.ru/p2", cld2, "application/warc-fields"),
        warc_record("response", "http://example.jp/p3", http_response(jp), "application/http; msgtype=response"),
        warc_record("response", "http://example.org/x.jpg", http_response(b"\xff\xd8\xff", "image/jpeg"),
                    "application/http; msgtype=response"),
    ]
    path = tmp_path / "t.warc.gz"
    write_warc(path, recs)
    table, st = pairs_of(path)
    got = {(r["url"], r["text"], r["text_source"]) for r in table.to_pylist()}
    assert got == {
        ("http://cdn.example.org/static/a.jpg", "A red & blue circle", "alt"),
        ("http://cdn.example.org/static/b.jpg", "Title only", "title"),
        ("http://cdn.example.org/static/l.jpg", "srcset wins", "alt"),
        ("http://cdn.example.org/lazy.jpg", "lazy", "alt"),
        ("http://cdn.example.org/static/big.jpg", "w " * 500, "alt"),  # the contract: cut after collapsing
        ("http://example.ru/r.jpg", "Красный круг", "alt"),
        ("http://example.jp/j.jpg", "赤い丸", "alt"),
    }
    rows = {r["url"]: r for r in table.to_pylist()}
    assert rows["http://example.ru/r.jpg"]["page_lang"] == "ru"
    assert rows["http://example.jp/j.jpg"]["page_lang"] is None
    assert rows["http://cdn.example.org/static/a.jpg"]["page_url"] == "http://example.org/p1.html"
    assert rows["http://cdn.example.org/static/a.jpg"]["uid"] == make_uid("http://cdn.example.org/static/a.jpg", "A red & blue circle")
    assert st.pages == 3 and st.images == 11 and st.pairs == 7
    assert st.drops == Counter(empty_text=1, data_uri=1, bad_scheme=1, no_url=1)
    assert not st.errors


def test_warc_bad_inputs_are_counted_not_raised(tmp_path):
    good = warc_record("response", "http://a.org/", http_response(b"<img src=x.jpg alt=ok>"), "application/http")
    cut = gzip.compress(good)[:-30]  # gzip member cut short
    (tmp_path / "cut.warc.gz").write_bytes(gzip.compress(good) + cut)
    table, st = pairs_of(tmp_path / "cut.warc.gz")
    assert table.num_rows >= 1  # what came before the cut is kept
    (tmp_path / "empty.warc.gz").write_bytes(b"")
    table, st = pairs_of(tmp_path / "empty.warc.gz")
    assert table.num_rows == 0 and st.errors == Counter(empty_file=1)
    (tmp_path / "junk.warc").write_bytes(b"this is not a warc file\n" * 100)
    table, st = pairs_of(tmp_path / "junk.warc")
    assert table.num_rows == 0 and st.errors == Counter(not_warc=1)
    huge = b"<html><body>" + b"<div>" * 20000 + b'<img src="a.jpg" alt="' + b"x" * 2_000_000 + b'"></body>'
    write_warc(tmp_path / "huge.warc.gz", [warc_record("response", "http://h.org/", http_response(huge), "application/http")])
    table, st = pairs_of(tmp_path / "huge.warc.gz", max_text_length=50)
    assert table.column("text").to_pylist() == ["x" * 50]


# --------------------------------------------------------------------------- WAT reader
def _wat_file(path, payloads: list[bytes], lengths: list[int | None] | None = None, gz: bool = True):
    lengths = lengths or [None] * len(payloads)
    data = warc_record("warcinfo", "", b"software: test\r\nformat: WAT\r\n", "application/warc-fields")
    for i, (p, n) in enumerate(zip(payloads, lengths)):
        data += warc_record("metadata", f"http://p{i}.org/", p, "application/json", length=n)
    path.write_bytes(gzip.compress(data) if gz else data)


def test_wat_links_base_and_lenient_content_length(tmp_path):
    links = [{"path": "IMG@/src", "url": "a.jpg", "alt": "first &amp; best"},
             {"path": "IMG@/src", "url": "/b.jpg", "alt": "", "title": "from title"},
             {"path": "IMG@/src", "url": "c.jpg"},
             {"path": "A@/href", "url": "/page", "text": "a link"},
             {"path": "IMG@/src", "url": "data:image/png;base64,xx", "alt": "inline"}]
    p0 = wat_json("http://p0.org/dir/page.html", links)
    p1 = wat_json("http://p1.org/x/", [{"path": "IMG@/src", "url": "i.jpg", "alt": "based"}], base="http://cdn.p1.org/s/")
    path = tmp_path / "t.warc.wat.gz"
    _wat_file(path, [p0, p1, b"{not json"], lengths=[None, len(p1) + 7, None])
    table, st = pairs_of(path)
    got = sorted((r["url"], r["text"], r["text_source"]) for r in table.to_pylist())
    assert got == [("http://cdn.p1.org/s/i.jpg", "based", "alt"),
                   ("http://p0.org/b.jpg", "from title", "title"),
                   ("http://p0.org/dir/a.jpg", "first & best", "alt")]
    assert st.errors["bad_content_length"] == 1 and st.pages == 2
    assert st.drops == Counter(empty_text=1, data_uri=1)
    # not lenient: the record with the wrong Content-Length is skipped (and still reported)
    table, st = pairs_of(path, lenient=False)
    assert sorted(table.column("text").to_pylist()) == ["first & best", "from title"]
    assert st.errors["bad_content_length"] == 1


def test_wat_odd_json_values_are_dropped_or_replaced_not_fatal(tmp_path):
    """A number where text belongs, a lone surrogate, a huge alt: counted or replaced, and the other pairs survive."""
    links = [{"path": "IMG@/src", "url": "a.jpg", "alt": 42}, {"path": "IMG@/src", "url": 7, "alt": "no url"},
             {"path": "IMG@/src", "url": "b.jpg", "alt": "x" * 5000}, {"path": "IMG@/src", "url": "c.jpg", "alt": "fine"}]
    lone = json.dumps({"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": "http://q.org/"}, "Payload-Metadata": {
        "HTTP-Response-Metadata": {"HTML-Metadata": {"Links": [{"path": "IMG@/src", "url": "d.jpg", "alt": "x\ud800y"}]}}}}})
    path = tmp_path / "odd.wat.gz"
    _wat_file(path, [wat_json("http://p.org/", links), lone.encode()])
    table, st = pairs_of(path, max_text_length=100)
    got = {r["url"]: r["text"] for r in table.to_pylist()}
    assert got["http://p.org/b.jpg"] == "x" * 100 and got["http://p.org/c.jpg"] == "fine"
    assert "http://p.org/a.jpg" not in got  # a number is not a caption
    assert st.drops["empty_text"] == 1 and st.drops["no_url"] == 1
    # the page with a lone surrogate (orjson refuses it; the standard library reads it) is kept, the
    # surrogate replaced: nothing lost, nothing that is not UTF-8 written
    assert got["http://q.org/d.jpg"] == "x?y"
    assert st.images == 5 and st.pairs == len(got) == 3 and not st.errors


def test_wat_page_without_images_counts_and_keeps_languages_apart(tmp_path):
    """A page with no IMG link is counted but not parsed; its language record never lands on another page."""
    def lang_record(uri: str, code: str) -> bytes:
        value = json.dumps({"reliable": True, "languages": [{"code": code}]})
        return json.dumps({"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": uri}, "Payload-Metadata": {
            "WARC-Metadata-Metadata": {"Metadata-Records": [{"Name": "languages-cld2", "Value": value}]}}}}).encode()

    escaped = wat_json("http://a.org/", [{"path": "IMG@/src", "url": "x.jpg", "alt": "escaped slash"}]).replace(
        b'"IMG@/src"', b'"IMG@\\/src"')  # JSON may write "/" as "\/"
    records = [("http://a.org/", escaped), ("http://a.org/", lang_record("http://a.org/", "fr")),
               ("http://b.org/", wat_json("http://b.org/", [{"path": "A@/href", "url": "/p", "text": "link"}])),
               ("http://b.org/", lang_record("http://b.org/", "de"))]
    data = warc_record("warcinfo", "", b"format: WAT\r\n", "application/warc-fields")
    for uri, payload in records:
        data += warc_record("metadata", uri, payload, "application/json")
    path = tmp_path / "langs.wat.gz"
    path.write_bytes(gzip.compress(data))
    table, st = pairs_of(path)
    assert [(r["url"], r["page_lang"]) for r in table.to_pylist()] == [("http://a.org/x.jpg", "fr")]
    assert st.pages == 2 and st.records == 5 and not st.errors  # records: the warcinfo too


def test_wat_truncated_gzip_and_uncompressed(tmp_path):
    p = wat_json("http://p.org/", [{"path": "IMG@/src", "url": "a.jpg", "alt": "kept"}])
    whole = tmp_path / "w.wat"
    _wat_file(whole, [p] * 50, gz=False)
    assert pairs_of(whole)[0].num_rows == 50
    cut = tmp_path / "cut.wat.gz"
    cut.write_bytes(gzip.compress(whole.read_bytes())[:-40])  # one gzip member, cut short
    table, st = pairs_of(cut)
    assert "truncated_gzip" in st.errors and 40 <= table.num_rows < 50


# --------------------------------------------------------------------------- URL lists
def test_url_lists_all_formats(tmp_path):
    rows = [{"u": "http://a.org/1.jpg", "c": "one"}, {"u": None, "c": "missing url"}, {"u": "UNLIKELY", "c": "x"},
            {"u": "ftp://a.org/2.jpg", "c": "ftp"}, {"u": "http://a.org/3.jpg", "c": "  "}, {"u": "https://a.org/4.jpg#f", "c": "four, \"quoted\""}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "l.parquet")
    (tmp_path / "l.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{bad json\n")
    import csv

    for name, delim in (("l.csv", ","), ("l.tsv", "\t")):
        with open(tmp_path / name, "w", newline="") as f:
            w = csv.writer(f, delimiter=delim)
            w.writerow(["u", "c"])
            for r in rows:
                w.writerow([r["u"] or "", r["c"]])
    for name in ("l.parquet", "l.jsonl", "l.csv", "l.tsv"):
        table, st = pairs_of(tmp_path / name, url_col="u", caption_col="c")
        assert table.column("url").to_pylist() == ["http://a.org/1.jpg", "https://a.org/4.jpg"], name
        assert table.column("text").to_pylist() == ["one", 'four, "quoted"'], name
        assert set(table.column("text_source").to_pylist()) == {"caption"}
        assert st.drops == Counter(no_url=1, not_absolute=1, bad_scheme=1, empty_text=1), name
    assert pairs_of(tmp_path / "l.jsonl", url_col="u", caption_col="c")[1].errors == Counter(invalid_json=1)
    table, st = pairs_of(tmp_path / "l.parquet", url_col="nope")
    assert table.num_rows == 0 and "no_url_column" in st.errors


# --------------------------------------------------------------------------- real files
def test_real_resiliparse_warc(shared_data):
    table, st = pairs_of(shared_data / "warc/resiliparse_warcfile.warc.gz")
    assert st.pages == 16 and st.images == 153
    # 37 <img> carry an alt attribute, 32 of them non-empty: all 32 become pairs; no title fills in
    assert table.num_rows == 32 and set(table.column("text_source").to_pylist()) == {"alt"}
    assert st.drops["empty_text"] + st.drops["no_url"] == 153 - 32
    langs = set(table.column("page_lang").to_pylist())
    assert {"ru", "de", "zh"} <= langs  # from the CC metadata records (languages-cld2)
    ru = [t for t, lang in zip(table.column("text").to_pylist(), table.column("page_lang").to_pylist()) if lang == "ru"]
    assert ru and all(any("а" <= ch <= "я" for ch in t.lower()) for t in ru)  # windows-1251 decoded
    assert all(u.startswith(("http://", "https://")) for u in table.column("url").to_pylist())


def test_real_npm_warc_and_wat_agree(shared_data):
    warc, st = pairs_of(shared_data / "warc/npmwarc_CC-MAIN-2014-35.warc")
    assert st.images == 861 and warc.num_rows == 861
    wat, wst = pairs_of(shared_data / "warc/npmwarc_CC-MAIN-2014-35.warc.wat")
    assert wat.num_rows == 4 and not wst.errors
    page = set(wat.column("page_url").to_pylist())
    assert page == {"http://0pointer.de/photos/?gallery=Australia&photo=496"}
    from_warc = {(r["url"], r["text"]) for r in warc.to_pylist() if r["page_url"] in page}
    assert from_warc == {(r["url"], r["text"]) for r in wat.to_pylist()}
    assert set(warc.column("record_id").to_pylist()) >= set(wat.column("record_id").to_pylist())


def test_real_mona_lisa(shared_data):
    table, st = pairs_of(shared_data / "warc/ukwa_wikipedia-mona-lisa.warc.gz")
    assert st.images == 48 and table.num_rows == 14  # the page was captured twice: 7 distinct pairs
    urls = table.column("url").to_pylist()
    assert all(u.startswith("http://upload.wikimedia.org/") or u.startswith("http://bits.wikimedia.org/") for u in urls)
    assert ("http://upload.wikimedia.org/wikipedia/commons/thumb/f/f9/Mona_Lisa%2C_by_Leonardo_da_Vinci%2C_from_"
            "C2RMF_natural_color.jpg/500px-Mona_Lisa%2C_by_Leonardo_da_Vinci%2C_from_C2RMF_natural_color.jpg") in urls


def test_real_bad_files_reported_not_fatal(shared_data):
    # the gzip stream itself is cut inside the one record: FastWARC reads a short block, the line reader says both
    table, st = pairs_of(shared_data / "warc/resiliparse_clipped.warc.gz")
    assert st.errors == Counter(truncated_record=1, truncated_gzip=1) and table.num_rows > 0
    table, st = pairs_of(shared_data / "warc/resiliparse_clipped.warc.gz", lenient=False)
    assert st.errors == Counter(truncated_record=1, truncated_gzip=1) and table.num_rows == 0
    # the cut WAT: LF instead of CRLF after every record; warcio and FastWARC read nothing of it
    table, st = pairs_of(shared_data / "warc/pycommoncrawl_file1.warc.wat.gz")
    assert st.images == 35 and table.num_rows == 10 and st.drops == Counter(empty_text=25)
    assert (st.records_fast, st.records_lenient) == (0, 5) and st.errors == Counter(bad_record_end=5)


def test_real_laion_url_list_with_dirty_rows(shared_data, tmp_path):
    src = pq.read_table(shared_data / "captions/laion400m_sample_10000.parquet")
    dirty = pa.Table.from_pylist([{"URL": None, "TEXT": "missing url"}, {"URL": "ftp://x.org/a.jpg", "TEXT": "ftp"},
                                  {"URL": "data:image/png;base64,AA", "TEXT": "inline"}])
    path = tmp_path / "laion_dirty.parquet"
    pq.write_table(pa.concat_tables([src.select(["URL", "TEXT"]), dirty.cast(src.select(["URL", "TEXT"]).schema)]), path)
    table, st = pairs_of(path, url_col="URL", caption_col="TEXT")
    assert st.records == 10_003
    assert st.drops["not_absolute"] == 1  # the "UNLIKELY" row
    assert st.drops["no_url"] == 1 and st.drops["bad_scheme"] == 1 and st.drops["data_uri"] == 1
    assert table.num_rows == 10_003 - sum(st.drops.values())
    assert "UNLIKELY" not in table.column("url").to_pylist()


# --------------------------------------------------------------------------- the Spark stage
def test_run_extract_spark_dedup_stats_strict_rerun(spark, tmp_path):
    page = http_response(b'<img src="/a.jpg" alt="same"><img src="/b.jpg" alt="other"><img src="/c.jpg">')
    (tmp_path / "in").mkdir()
    for i in range(3):  # three files with the same page: cross-file duplicates
        write_warc(tmp_path / f"in/f{i}.warc.gz", [warc_record("response", "http://d.org/", page, "application/http")])
    _wat_file(tmp_path / "in/bad.warc.wat.gz", [wat_json("http://w.org/", [{"path": "IMG@/src", "url": "w.jpg", "alt": "wat"}])],
              lengths=[5])
    cfg = load_config(overrides={"output_dir": str(tmp_path / "out")})
    killed = [tmp_path / "out/candidates.tmp-0badc0de", tmp_path / "out/candidates.tmp-0badc0de.filestats"]
    for leftover in killed:  # what a killed attempt leaves: the output's temporary and the per-file figures
        leftover.mkdir(parents=True)
        (leftover / "000000.json").write_text("{}")
    stats = run_extract(cfg, spark, input=str(tmp_path / "in/*.gz"))  # one glob, as a string
    out = tmp_path / "out/candidates"
    assert not any(p.exists() for p in killed)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["candidates"]
    table = conform(read_candidates(out), CANDIDATES)
    assert sorted(table.column("text").to_pylist()) == ["other", "same", "wat"]
    assert (out / "_SUCCESS").exists()
    assert stats["input_rows"] == 10 and stats["output_rows"] == 3
    assert stats["drops"] == {"duplicate": 4, "empty_text": 3}
    assert stats["extra"]["errors"] == {"bad_content_length": 1} and stats["extra"]["files"] == 4
    assert len(stats["extra"]["per_file"]) == 4 and json.loads((out / STATS_FILE).read_text())["output_rows"] == 3
    # a rerun skips the complete output
    assert run_extract(cfg, spark, input=[str(tmp_path / "in/*.gz")])["output_rows"] == 3
    # strict: input errors fail the run, and leave no output behind
    cfg_strict = load_config(overrides={"output_dir": str(tmp_path / "out2"), "extract.strict": True})
    with pytest.raises(UserError, match="bad_content_length"):
        run_extract(cfg_strict, spark, input=[str(tmp_path / "in/*.gz")])
    assert not (tmp_path / "out2/candidates").exists()


def test_run_extract_without_inputs_or_sample_says_what_to_do(tmp_path):
    cfg = load_config(overrides={"output_dir": str(tmp_path)})
    with pytest.raises(UserError, match="no sample crawl .*run `wit sample` first"):
        run_extract(cfg)
    with pytest.raises(UserError, match="input not found"):
        run_extract(cfg, input=[str(tmp_path / "missing.warc.gz")])
    assert list(tmp_path.iterdir()) == []  # nothing that looks like an output


def test_resolve_inputs_paths_file_and_errors(tmp_path):
    for n in ("a", "b"):
        (tmp_path / f"{n}.warc.wat.gz").write_bytes(b"")
    (tmp_path / "wat.paths.gz").write_bytes(gzip.compress(b"a.warc.wat.gz\nb.warc.wat.gz\n"))
    assert resolve_inputs([str(tmp_path / "wat.paths.gz")]) == [str(tmp_path / "a.warc.wat.gz"), str(tmp_path / "b.warc.wat.gz")]
    assert resolve_inputs([str(tmp_path / "wat.paths.gz")], "s3://commoncrawl/") == [
        "s3://commoncrawl/a.warc.wat.gz", "s3://commoncrawl/b.warc.wat.gz"]
    assert len(resolve_inputs([str(tmp_path / "*.wat.gz"), str(tmp_path / "a.warc.wat.gz")])) == 2
    with pytest.raises(UserError, match="no input files match"):
        resolve_inputs([str(tmp_path / "*.nothing")])
    with pytest.raises(UserError, match="input not found"):
        resolve_inputs([str(tmp_path / "missing.warc.gz")])


def test_cli_strict_exit_code(tmp_path, shared_data, spark):
    from pipeline.cli import main

    args = ["extract", "-o", str(tmp_path), "--master", "local[2]", str(shared_data / "warc/resiliparse_clipped.warc.gz")]
    assert main(args + ["--strict"]) == 2
    assert main(args) == 0
    assert read_candidates(tmp_path / "candidates").num_rows == 7


def test_resolve_url_matches_urljoin():
    """The fast paths give exactly urljoin's answer (fragment and an empty query dropped)."""
    import random
    from urllib.parse import urljoin

    bases = ["http://a.org", "http://a.org/x/y.html", "http://a.org/x//y/z.html?q=1", "https://b.org:8080/a/b/c;p?q#f",
             "http://a.org/x/./y/../z", "http://a.org/x/..", "http://a.org/a/b/c/d/"]
    rng = random.Random(0)
    raws = ["../../../../i.jpg", "/a/../b.jpg", "a//b.jpg", "x.jpg?#f", "//cdn.org/a.jpg", "é.jpg", "http://c.org/a.jpg?"]
    raws += ["".join(rng.choice("ab./?#") for _ in range(rng.randint(1, 10))) for _ in range(3000)]
    for b in bases:
        for r in raws:
            want = urljoin(b, r).split("#")[0]
            want = want[:-1] if want.find("?") == len(want) - 1 else want
            got, _ = resolve_url(r, b)
            assert got == want or (got is None and not want.startswith("http")), (b, r)


def test_other_whitespace_is_exactly_what_str_split_splits_on():
    import re

    from pipeline.extract.text import _OTHER_WHITESPACE

    listed = {c for c in map(chr, range(0x110000)) if re.fullmatch(f"[{_OTHER_WHITESPACE}]", c)}
    assert listed == {c for c in map(chr, range(0x110000)) if c.isspace()} - {" "}


def test_clean_text_column_equals_clean_text_row_by_row():
    import random

    rng = random.Random(1)
    alphabet = ["a", "b", " ", "  ", "\t", "\n", "\xa0", "\u3000", "\x1c", "&amp;", "&", "&#233;", "é", "日", "\u200b"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(5000)] + [None, ""]
    for unescape in (True, False):
        for max_len in (5, 1000):
            got = clean_text_column(pa.array(texts, pa.string()), max_len, unescape).to_pylist()
            assert got == [clean_text(t, max_len, unescape) for t in texts]


def test_resolve_url_column_equals_resolve_url_row_by_row():
    """The Arrow fast paths (absolute, //host, /root, dir/ and ../ references) give resolve_url's answers."""
    import random

    import numpy as np

    bases = ["http://a.org", "http://a.org/x/y.html", "http://a.org/x//y/z.html?q=1", "https://b.org:8080/a/b/c;p?q#f",
             "http://a.org/x/./y/../z", "http://a.org/x/..", "http://a.org/a/b/c/d/", "https://u@h.org/.well/x",
             "HTTP://A.org/b/c", "http://a.org?x", "http://a.org#f/g", "ftp://x/y/", None, "", "http://[::1]/a/",
             "http://a.org/é/x.html", "http://a.org/a b/c"]
    rng = random.Random(0)
    raws = ["../../../../i.jpg", "/a/../b.jpg", "a//b.jpg", "x.jpg?#f", "//cdn.org/a.jpg", "é.jpg", "http://c.org/a.jpg?",
            "../", "..", "../x?y", "//", "///x", "/", "?", "#", "a:b/c", "data:x", " a.jpg ", "a.jpg#x", "../../", "..//x",
            "/?q", "//h?x", "HTTP://q/x", None, "http://x.org/" + "a" * 9000, "/" + "a" * (MAX_URL_LENGTH - 1),
            "/" + "a" * MAX_URL_LENGTH]
    raws += ["".join(rng.choice("ab./?#:") for _ in range(rng.randint(1, 10))) for _ in range(1500)]
    raw = [r for _ in bases for r in raws]
    page_of = np.repeat(np.arange(len(bases)), len(raws))
    wanted = [rng.random() < 0.8 for _ in raw]
    got, reasons = resolve_url_column(pa.array(raw, pa.string()), pa.array(bases, pa.string()), page_of, MAX_URL_LENGTH,
                                      pa.array(wanted))
    want = [resolve_url(r, bases[p]) if w else (None, None) for r, p, w in zip(raw, page_of, wanted)]
    assert got.to_pylist() == [u for u, _ in want]
    assert Counter(reasons) == Counter(reason for _, reason in want if reason)


def test_pages_without_images_are_not_held():
    """A crawl of image-less pages must not pile up in the sink until BATCH_ROWS images arrive."""
    from pipeline.extract import PairSink

    sink = PairSink("f", FileStats("f"), Options())
    for i in range(10_000):
        sink.add_page([], f"http://p{i}.org/", f"http://p{i}.org/", f"<r{i}>", None)
    sink.add_page([("a.jpg", "one", None)], "http://q.org/", "http://q.org/", "<q>", "en")
    assert len(sink.pages) == 1
    batch = sink.flush()
    assert batch.to_pylist()[0]["url"] == "http://q.org/a.jpg" and batch.to_pylist()[0]["page_lang"] == "en"
