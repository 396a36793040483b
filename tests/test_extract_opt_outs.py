"""Page-level AI-training opt-outs at extraction: hand-made WARC and WAT records whose pages say noai /
noimageai / tdm-reservation (meta or response header) give no candidates, each image counted under its
reason; `extract.honour_opt_outs: false` keeps them; the real archives extract exactly as before."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest

from pipeline.config import load_config
from pipeline.fetch.consent import html_metas
from tests.test_extract import pairs_of, warc_record, write_warc

UA = "wit-builder/0.1 (+https://github.com/wit-builder/wit-builder)"
IMGS = '<img src="/a.jpg" alt="a red circle"><img src="/b.jpg" alt="a blue square"><img src="/c.jpg">'

# page name → (extra <head> markup, extra HTTP headers, expected reason or None)
PAGES = {
    "plain": ("", [], None),
    "robots-noai": ('<meta name="robots" content="noai">', [], "opted_out_meta"),
    "robots-noimageai": ('<META name="ROBOTS" content="index, follow, NoImageAI">', [], "opted_out_meta"),
    "ccbot-meta": ('<meta name="CCBot" content="noai">', [], "opted_out_meta"),
    "our-meta": ('<meta name="wit-builder" content="noimageai">', [], "opted_out_meta"),
    "other-meta": ('<meta name="otherbot" content="noai">', [], None),
    "tdm-meta": ('<meta name="tdm-reservation" content="1"><meta name="tdm-policy" content="https://p.example/">',
                 [], "opted_out_tdmrep"),
    "tdm-meta-0": ('<meta name="tdm-reservation" content="0">', [], None),
    "header-noai": ("", [("X-Robots-Tag", "noindex"), ("X-Robots-Tag", "noai")], "opted_out_header"),
    "header-other": ("", [("X-Robots-Tag", "otherbot: noai")], None),
    "header-tdm": ("", [("tdm-reservation", "1")], "opted_out_tdmrep"),
    "noai-in-text": ("<title>Why we say noai and tdm-reservation</title>", [], None),
}


def _html(head: str) -> bytes:
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'>{head}</head><body>{IMGS}</body></html>".encode()


def _warc(path, names):
    recs = [warc_record("warcinfo", "", b"software: test\r\n", "application/warc-fields")]
    for name in names:
        head, headers, _ = PAGES[name]
        extra = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers)
        http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n" + extra + b"\r\n" + _html(head)
        recs.append(warc_record("response", f"http://{name}.example/page", http, "application/http; msgtype=response"))
    write_warc(path, recs)


def _wat(path, names):
    data = warc_record("warcinfo", "", b"format: WAT\r\n", "application/warc-fields")
    for name in names:
        head, headers, _ = PAGES[name]
        metas = [{"name": n, "content": c} for n, c in html_metas(_html(head))]  # what CC's WAT writes
        links = [{"path": "IMG@/src", "url": u, **({"alt": a} if a else {})}
                 for u, a in (("/a.jpg", "a red circle"), ("/b.jpg", "a blue square"), ("/c.jpg", None))]
        html_meta = {"Head": {"Title": name, "Metas": metas}, "Links": links}
        env = {"Envelope": {
            "WARC-Header-Metadata": {"WARC-Target-URI": f"http://{name}.example/page", "WARC-Record-ID": f"<urn:{name}>"},
            "Payload-Metadata": {"HTTP-Response-Metadata": {
                "Headers": {k: v for k, v in headers} | {"Content-Type": "text/html"}, "HTML-Metadata": html_meta}}}}
        if name == "noai-in-text":
            html_meta["Head"]["Title"] = "Why we say noai and tdm-reservation"
        data += warc_record("metadata", f"http://{name}.example/page", json.dumps(env).encode(), "application/json")
    path.write_bytes(gzip.compress(data))


@pytest.mark.parametrize("fmt", ["warc", "wat"])
def test_opted_out_pages_give_no_candidates(tmp_path, fmt):
    names = [n for n in PAGES if not (fmt == "wat" and n == "header-noai")]  # a WAT's Headers is one value a name
    path = tmp_path / f"pages.{fmt}.gz"
    (_warc if fmt == "warc" else _wat)(path, names)
    table, st = pairs_of(path, user_agent=UA)
    kept = {r["page_url"].split("//")[1].split(".")[0] for r in table.to_pylist()}
    assert kept == {n for n in names if PAGES[n][2] is None}
    reasons = Counter(PAGES[n][2] for n in names if PAGES[n][2])
    assert st.opted_out_pages == sum(reasons.values())
    for reason, pages in reasons.items():
        assert st.drops[reason] == 3 * pages  # every <img> of the page, with or without alt
    assert st.images == 3 * len(names) and st.pairs == table.num_rows == 2 * len(kept)
    assert st.drops["empty_text"] == len(kept)

    table_off, st_off = pairs_of(path, user_agent=UA, honour_opt_outs=False)
    assert table_off.num_rows == 2 * len(names) and st_off.opted_out_pages == 0
    assert not any(k.startswith("opted_out") for k in st_off.drops)


def test_wat_header_list_values_and_scoped_to_us(tmp_path):
    """WAT Headers written as a list (repeated headers), and an X-Robots-Tag scoped to our token."""
    env = {"Envelope": {
        "WARC-Header-Metadata": {"WARC-Target-URI": "http://h.example/", "WARC-Record-ID": "<urn:h>"},
        "Payload-Metadata": {"HTTP-Response-Metadata": {
            "Headers": {"X-Robots-Tag": ["googlebot: nofollow", "wit-builder: noimageai"]},
            "HTML-Metadata": {"Links": [{"path": "IMG@/src", "url": "/a.jpg", "alt": "a cat"}]}}}}}
    data = warc_record("metadata", "http://h.example/", json.dumps(env).encode(), "application/json")
    path = tmp_path / "h.wat.gz"
    path.write_bytes(gzip.compress(data))
    assert pairs_of(path, user_agent=UA)[1].drops == Counter(opted_out_header=1)
    assert pairs_of(path, user_agent="")[0].num_rows == 1  # not scoped to an AI token nor to an empty UA


def test_config_key():
    cfg = load_config(None, ["extract.honour_opt_outs=false"])
    assert cfg.extract.honour_opt_outs is False
    assert load_config(None, []).extract.honour_opt_outs is True


REAL = [("resiliparse_warcfile.warc.gz", 32), ("npmwarc_CC-MAIN-2014-35.warc", 861),
        ("npmwarc_CC-MAIN-2014-35.warc.wat", 4), ("ukwa_wikipedia-mona-lisa.warc.gz", 14),
        ("cc_whirlwind.warc.gz", None), ("cc_whirlwind.warc.wat.gz", None), ("pycommoncrawl_file1.warc.wat.gz", None),
        ("resiliparse_clipped.warc.gz", None)]


@pytest.mark.parametrize("name,pairs", REAL, ids=[n for n, _ in REAL])
def test_real_archives_extract_the_same_with_opt_outs_on(shared_data, name, pairs):
    """None of the real pages opts out: the counts are those of the other tests, on and off alike."""
    path = shared_data / "warc" / name
    on, st_on = pairs_of(path, user_agent=UA)
    off, st_off = pairs_of(path, honour_opt_outs=False)
    assert on.equals(off) and st_on.drops == st_off.drops and st_on.images == st_off.images
    assert st_on.opted_out_pages == 0
    if pairs is not None:
        assert on.num_rows == pairs


def test_run_extract_counts_opt_outs_in_stage_stats(spark, tmp_path):
    """The Spark stage sums every file's opt-out drops into _stats.json (the report's funnel reads them);
    with extract.honour_opt_outs false the same inputs give every pair and no opt-out reason."""
    from pipeline.extract import run_extract

    (tmp_path / "in").mkdir()
    _warc(tmp_path / "in/a.warc.gz", ["plain", "robots-noai", "header-tdm"])
    _wat(tmp_path / "in/b.warc.wat.gz", ["our-meta", "other-meta"])
    stats = run_extract(load_config(overrides={"output_dir": str(tmp_path / "on")}), spark,
                        input=str(tmp_path / "in/*.gz"))
    assert stats["drops"] == {"opted_out_meta": 6, "opted_out_tdmrep": 3, "empty_text": 2}
    assert stats["input_rows"] == 15 and stats["output_rows"] == 4 and stats["extra"]["opted_out_pages"] == 3
    off = run_extract(load_config(overrides={"output_dir": str(tmp_path / "off"), "extract.honour_opt_outs": False}),
                      spark, input=str(tmp_path / "in/*.gz"))
    assert off["drops"] == {"empty_text": 5} and off["output_rows"] == 10 and off["extra"]["opted_out_pages"] == 0
