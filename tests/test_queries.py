"""The query list: sources, order, budget, Wikipedia XML/JSONL + pageviews via Spark, stable bytes."""

from __future__ import annotations

import bz2
import gzip
import json
import math
import os

import pyarrow.parquet as pq
import pytest

from pipeline import inputs, queries, wikipedia
from pipeline.config import load_config
from pipeline.errors import UserError

WORDNET = "/usr/share/wordnet"
needs_wordnet = pytest.mark.skipif(not os.path.isfile(f"{WORDNET}/data.noun"),
                                   reason="WordNet database absent (apt-get install wordnet-base)")

# Plain text of the five articles below (after markup is stripped): 41 tokens.
PAGES = [
    ("Cat", 0, "Alpha Beta gamma. The cat and the dog. {{cite web|title=Hiddenword|url={{nested|Nestword}}}} "
               "[[Zebra crossing|zebras]] run.<ref name=a>Refword</ref>"),
    ("Dog", 0, "Alpha Beta gamma. The dog and the cat. [[File:Pic.jpg|thumb|Fileword [[caption]]]] zebras run."),
    ("Bird", 0, "== Alpha Beta gamma, the bird. ==\n'''Bold''' zebras run. <!-- Commentword -->\n[[Category:Birds]]"),
    ("Talk:Cat", 1, "Talkword Talkword Talkword Talkword"),
    ("Kitty", 0, "#REDIRECT [[Cat]]"),
    ("Fish", 0, "Alpha Beta gamma; zebras run. Rareword the cat.\n{| class=wikitable\n| Tableword\n|}"),
    ("Mouse", 0, "* Alpha Beta gamma! The cat."),
]
N_TOKENS = 41
UNIGRAMS = ["Alpha", "Beta", "gamma", "cat", "run", "the", "zebras", "The"]  # count >= 3, most frequent first
BIGRAMS = ["Alpha Beta", "Beta gamma", "zebras run", "and the"]  # count >= 2, c12/(c1 c2) >= 0.18
TITLES = ["Cat", "Dog", "New York City"]  # "Alpha" (100 views) is already a unigram


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


HEADER = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">\n'
          "  <siteinfo><sitename>Wikipedia</sitename></siteinfo>\n")
FOOTER = "</mediawiki>\n"


def page_xml(i: int) -> str:
    t, ns, text = PAGES[i]
    return (f"  <page>\n    <title>{_xml_escape(t)}</title>\n    <ns>{ns}</ns>\n    <id>{i}</id>\n"
            + ('    <redirect title="Cat" />\n' if text.startswith("#REDIRECT") else "")
            + f'    <revision><id>{100 + i}</id><text bytes="{len(text)}" xml:space="preserve">{_xml_escape(text)}</text></revision>\n'
            "  </page>\n")


def write_dump(path, pages=None) -> None:
    pages = range(len(PAGES)) if pages is None else pages
    path.write_text(HEADER + "".join(page_xml(i) for i in pages) + FOOTER)


def write_pageviews(folder) -> list[str]:
    a = folder / "pageviews-20240101-000000"
    a.write_text("en Cat 50 0\nen Cat 10 0\nen Dog 40 0\nen Talk:Cat 500 0\nen New_York_City 80 0\n"
                 "de Katze 900 0\nen.m Cat 1000 0\nen Alpha 100 0\ngarbage line\nen Zebra_crossing many 0\n")
    b = folder / "pageviews-20240101-010000.gz"
    with gzip.open(b, "wt") as f:
        f.write("en Cat 20 0\nen Dog 40 0\nen Bird 5 0\n")
    return [str(a), str(b)]


def wiki_cfg(tmp_path, **queries_kw):
    dump = tmp_path / "enwiki-pages-articles.xml"
    write_dump(dump)
    pv = write_pageviews(tmp_path)
    q = {"sources": ["unigrams", "bigrams", "titles"], "wikipedia": str(dump), "pageviews": pv,
         "min_unigram_count": 3, "min_bigram_count": 2, "min_bigram_pmi": math.log2(0.18 * N_TOKENS),
         "min_title_views": 70, **queries_kw}
    return load_config(overrides={"output_dir": str(tmp_path / "out"), "queries": q})


# --------------------------------------------------------------------------- pure functions
def test_spacing_is_metaclip_normalisation():
    assert queries.spacing("A cat.") == " A cat .  "
    assert queries.spacing("a,b;c:d?e!f`g") == " a , b ; c : d ? e ! f ` g "
    assert queries.spacing("x\ty\r\nz") == " x y  z "


def test_valid_entry_drops_empty_and_single_punctuation():
    assert queries.valid_entry("a") and queries.valid_entry("7") and queries.valid_entry("U.S.")
    assert not queries.valid_entry("") and not queries.valid_entry("  ")
    assert not queries.valid_entry(",") and not queries.valid_entry("-") and not queries.valid_entry("$")


def test_wikitext_to_text_strips_markup():
    text = wikipedia.wikitext_to_text(PAGES[0][2] + "\n" + PAGES[1][2] + "\n" + PAGES[2][2] + " [http://x.org Site] a&amp;b")
    for gone in ("Hiddenword", "Nestword", "Refword", "Fileword", "caption", "Commentword", "Category", "crossing",
                 "{{", "[[", "'''", "=="):
        assert gone not in text
    for kept in ("zebras run", "Bold zebras", "Alpha Beta gamma, the bird.", "Site", "a&b"):
        assert kept in text


def test_tokenize_marks_separators():
    assert wikipedia.tokenize('The cat, ("New York") - dog.') == ["The", "cat", None, "New", "York", None, "dog", None]


def test_gram_counts_skip_redirects():
    c = wikipedia.gram_counts(["#REDIRECT [[Cat]]", "a b a", None], wikitext=True)
    assert c == {"a": 2, "b": 1, "a b": 1, "b a": 1}


@needs_wordnet
def test_wordnet_first_lemmas():
    entries = queries.wordnet_entries(WORDNET)
    assert entries[:3] == ["entity", "physical entity", "abstraction"]
    assert "New York" in entries and "Yorkshire terrier" in entries
    assert not any("_" in e or e.endswith(("(a)", "(p)", "(ip)")) for e in entries)


def test_wordnet_missing_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="wordnet-base"):
        queries.wordnet_entries(str(tmp_path))


def test_wordfreq_entries_most_frequent_first():
    words = queries.wordfreq_entries(5.0)
    assert [w for w, _ in words[:4]] == ["the", "The", "to", "To"]
    assert all(not any(ch.isdigit() for ch in w) for w, _ in words)
    counts = [c for _, c in words]
    assert counts == sorted(counts, reverse=True)


# --------------------------------------------------------------------------- building
def test_build_from_wikipedia_xml_and_pageviews(spark, tmp_path):
    cfg = wiki_cfg(tmp_path)
    stats = queries.run_queries(cfg, spark)
    out = tmp_path / "out" / "queries"
    t = pq.read_table(out / "queries.parquet")
    assert t.column("entry").to_pylist() == UNIGRAMS + BIGRAMS + TITLES
    assert t.column("entry_id").to_pylist() == list(range(len(t)))
    assert t.column("source").to_pylist() == ["unigrams"] * 8 + ["bigrams"] * 4 + ["titles"] * 3
    counts = dict(zip(t.column("entry").to_pylist(), t.column("count").to_pylist()))
    assert counts["Alpha"] == 5 and counts["The"] == 3 and counts["zebras run"] == 4 and counts["Cat"] == 80
    assert json.loads((out / "metadata.json").read_text()) == t.column("entry").to_pylist()
    assert (out / "_SUCCESS").exists()
    assert stats["extra"]["wikipedia"]["tokens"] == N_TOKENS
    assert stats["extra"]["per_source"]["titles"]["duplicate"] == 1  # "Alpha"
    assert stats["drops"]["duplicate"] == 1
    # The loader reads it back in id order, from the folder or any of its files.
    assert queries.load_query_list(str(out)) == UNIGRAMS + BIGRAMS + TITLES


def test_build_twice_gives_identical_files_and_budget_cuts(spark, tmp_path):
    cfg = wiki_cfg(tmp_path, budget=10)
    queries.run_queries(cfg, spark)
    out = tmp_path / "out" / "queries"
    first = {n: (out / n).read_bytes() for n in ("queries.parquet", "metadata.json")}
    assert json.loads(first["metadata.json"]) == (UNIGRAMS + BIGRAMS)[:10]
    queries.run_queries(cfg, spark)  # complete → skipped
    stats = queries.run_queries(cfg, spark, overwrite=True)
    assert {n: (out / n).read_bytes() for n in first} == first
    assert stats["drops"]["over_budget"] == 2  # titles are not even read once the list is full


def test_build_from_jsonl_and_wordnet(spark, tmp_path):
    if not os.path.isfile(f"{WORDNET}/data.noun"):
        pytest.skip("WordNet database absent")
    jl = tmp_path / "wiki.jsonl"
    jl.write_text("".join(json.dumps({"title": "T", "text": "Zyxwv qwerty Zyxwv qwerty entity"}) + "\n" for _ in range(2)))
    cfg = load_config(overrides={"output_dir": str(tmp_path / "o"), "queries": {
        "sources": ["wordnet", "unigrams"], "wikipedia": str(jl), "min_unigram_count": 2}})
    stats = queries.run_queries(cfg, spark)
    t = pq.read_table(tmp_path / "o" / "queries" / "queries.parquet").to_pydict()
    assert t["entry"][0] == "entity" and t["source"][0] == "wordnet"
    assert t["entry"][-2:] == ["Zyxwv", "qwerty"] and t["source"][-1] == "unigrams"
    numbers = [e for e, s in zip(t["entry"], t["source"]) if s == "numbers"]
    assert set(numbers) <= {str(i) for i in range(100)} and "42" in t["entry"] and "0" in t["entry"]
    assert stats["extra"]["per_source"]["unigrams"]["duplicate"] == 1  # "entity"


def test_offline_default_uses_wordfreq_and_says_so(tmp_path):
    cfg = load_config(overrides={"output_dir": str(tmp_path), "queries": {"sources": ["unigrams", "bigrams", "titles"],
                                                                          "budget": 500}})
    stats = queries.run_queries(cfg)  # no Spark needed
    assert stats["extra"]["sources"] == ["wordfreq"] and "wordfreq" in stats["extra"]["notes"][0]
    entries = queries.load_query_list(str(tmp_path / "queries" / "metadata.json"))
    assert len(entries) == 500 and entries[:3] == ["the", "The", "to"]


def test_cli_queries_build(tmp_path):
    from pipeline.cli import main

    rc = main(["queries", "build", "-o", str(tmp_path), "--sources", "wordfreq", "--budget", "20"])
    assert rc == 0 and len(queries.load_query_list(str(tmp_path / "queries"))) == 20
    assert main(["queries", "build", "-o", str(tmp_path), "--wikipedia", str(tmp_path / "nope.xml"),
                 "--sources", "unigrams", "--overwrite"]) == 2


def test_load_query_list_formats(tmp_path):
    (tmp_path / "l.txt").write_text("cat\n\nNew York\n")
    assert queries.load_query_list(str(tmp_path / "l.txt")) == ["cat", "New York"]
    (tmp_path / "m.json").write_text(json.dumps(["a", "b c"]))
    assert queries.load_query_list(str(tmp_path / "m.json")) == ["a", "b c"]
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        queries.load_query_list(str(tmp_path / "bad.json"))
    with pytest.raises(UserError, match="not found"):
        queries.load_query_list(str(tmp_path / "absent"))


# --------------------------------------------------------------------------- Wikimedia's dump files
# The names Wikimedia publishes at dumps.wikimedia.org/enwiki/latest/ (pages split 0-2, 3-6 here).
PARTS = [(range(0, 3), "p1p3"), (range(3, len(PAGES)), "p4p7")]


def bz2_dump(path, pages) -> None:
    path.write_bytes(bz2.compress((HEADER + "".join(page_xml(i) for i in pages) + FOOTER).encode()))


def multistream_dump(path, index_path, pages) -> None:
    """A multistream file: header, then streams of 2 pages each, then the footer, each its own bz2
    stream; the index lists ``offset:page_id:title`` of each page's stream."""
    blobs, index, offset = [bz2.compress(HEADER.encode())], [], 0
    offset = len(blobs[0])
    pages = list(pages)
    for k in range(0, len(pages), 2):
        chunk = pages[k:k + 2]
        index += [f"{offset}:{i}:{PAGES[i][0]}" for i in chunk]
        blobs.append(bz2.compress("".join(page_xml(i) for i in chunk).encode()))
        offset += len(blobs[-1])
    blobs.append(bz2.compress(FOOTER.encode()))
    path.write_bytes(b"".join(blobs))
    index_path.write_bytes(bz2.compress(("\n".join(index) + "\n").encode()))


def dump_layout(tmp_path, layout: str) -> str:
    """The dump as Wikimedia names it, in one of its published layouts; returns what the user passes."""
    d = tmp_path / "dumps"
    d.mkdir()
    every = range(len(PAGES))
    if layout == "single":
        bz2_dump(d / "enwiki-latest-pages-articles.xml.bz2", every)
        return str(d / "enwiki-latest-pages-articles.xml.bz2")
    if layout == "uncompressed":
        write_dump(d / "enwiki-latest-pages-articles.xml")
        return str(d / "enwiki-latest-pages-articles.xml")
    if layout == "multistream":  # the file with its index beside it: the folder is passed
        multistream_dump(d / "enwiki-latest-pages-articles-multistream.xml.bz2",
                         d / "enwiki-latest-pages-articles-multistream-index.txt.bz2", every)
        return str(d)
    if layout == "multistream_parts_glob":
        for n, (pages, span) in enumerate(PARTS, 1):
            multistream_dump(d / f"enwiki-latest-pages-articles-multistream{n}.xml-{span}.bz2",
                             d / f"enwiki-latest-pages-articles-multistream-index{n}.txt-{span}.bz2", pages)
        return str(d / "enwiki-latest-pages-articles-multistream*")
    for n, (pages, span) in enumerate(PARTS, 1):
        bz2_dump(d / f"enwiki-latest-pages-articles{n}.xml-{span}.bz2", pages)
    if layout == "parts_folder":
        return str(d)
    if layout == "parts_glob":
        return str(d / "enwiki-latest-pages-articles*.xml-p*.bz2")
    if layout == "paths_file":  # relative and absolute paths, a comment
        lst = tmp_path / "parts.txt"
        lst.write_text(f"# the two parts\ndumps/enwiki-latest-pages-articles1.xml-p1p3.bz2\n"
                       f"{d}/enwiki-latest-pages-articles2.xml-p4p7.bz2\n")
        return str(lst)
    raise AssertionError(layout)


@pytest.mark.parametrize("layout", ["single", "uncompressed", "multistream", "multistream_parts_glob", "parts_folder",
                                    "parts_glob", "paths_file"])
def test_wikipedia_dump_layouts_give_the_same_grams(spark, tmp_path, layout, monkeypatch):
    monkeypatch.setattr(wikipedia, "MULTISTREAM_TASK_BYTES", 1)  # every bz2 stream of pages its own task
    path = dump_layout(tmp_path, layout)
    cfg = wiki_cfg(tmp_path).queries
    unigrams, bigrams, info = wikipedia.wikipedia_grams(spark, path, cfg)
    assert [w for w, _ in unigrams] == UNIGRAMS and [w for w, _ in bigrams] == BIGRAMS
    assert info["tokens"] == N_TOKENS and info["format"] == "xml"
    assert info["files"] == (1 if layout in ("single", "uncompressed", "multistream") else 2)
    assert info["index_files"] == {"multistream": 1, "multistream_parts_glob": 2}.get(layout, 0)
    # The index splits multistream files at its stream offsets: 4 streams of pages (2 pages each, per part).
    assert info["tasks"] == (4 if "multistream" in layout else info["files"])


def test_dump_detected_by_content_not_name(tmp_path):
    gz = tmp_path / "dump.data"
    gz.write_bytes(gzip.compress((HEADER + page_xml(0) + FOOTER).encode()))
    assert wikipedia.classify_wikipedia_file(str(gz)) == "xml"
    assert list(wikipedia.dump_pages(str(gz))) == [(0, PAGES[0][2])]
    idx = tmp_path / "enwiki-latest-pages-articles-multistream-index.txt"  # an unpacked index: not a paths file
    idx.write_text("597:10:AccessibleComputing\n597:12:Anarchism\n")
    assert wikipedia.classify_wikipedia_file(str(idx)) == "index"


@pytest.mark.parametrize("content,match", [
    (b"", "is empty"),
    (b"just some notes\nnot a dump\n", "not a Wikipedia dump"),
    (bz2.compress(b"<html><body>a saved web page</body></html>"), r"XML \(bz2-compressed\) but not a MediaWiki dump"),
    (bz2.compress((HEADER + page_xml(0)).encode())[:40], "could not be decompressed"),
])
def test_not_a_dump_is_one_line_naming_the_file(tmp_path, content, match):
    bad = tmp_path / "enwiki-latest-pages-articles1.xml-p1p41242.bz2"
    bad.write_bytes(content)
    with pytest.raises(UserError, match=match) as e:
        wikipedia.wikipedia_files(str(bad))
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_cut_dump_part_stops_naming_it(spark, tmp_path):
    """A part cut short after its first block decompressed: found while reading, stops the build."""
    d = tmp_path / "dumps"
    d.mkdir()
    bz2_dump(d / "enwiki-latest-pages-articles1.xml-p1p3.bz2", range(3))
    whole = bz2.compress((HEADER + "".join(page_xml(i % len(PAGES)) for i in range(10000)) + FOOTER).encode())
    cut = d / "enwiki-latest-pages-articles2.xml-p4p7.bz2"
    cut.write_bytes(whole[: len(whole) - 100])
    with pytest.raises(inputs.InputFileError, match="damaged file") as e:
        wikipedia.wikipedia_grams(spark, str(d), wiki_cfg(tmp_path).queries)
    assert e.value.path == str(cut) and e.value.reason == "truncated"


def test_cli_builds_from_a_part_file(tmp_path, capsys):
    from pipeline.cli import main

    d = tmp_path / "dumps"
    d.mkdir()
    bz2_dump(d / "enwiki-latest-pages-articles1.xml-p1p41242.bz2", range(len(PAGES)))
    rc = main(["queries", "build", "-o", str(tmp_path / "o"), "--sources", "unigrams", "--min-unigram-count", "3",
               "--wikipedia", str(d / "enwiki-latest-pages-articles1.xml-p1p41242.bz2"), "--master", "local[1]"])
    assert rc == 0, capsys.readouterr().err
    assert queries.load_query_list(str(tmp_path / "o" / "queries")) == UNIGRAMS


@pytest.mark.parametrize("kind", ["not_format", "empty", "cut"])
def test_damaged_pageview_file_stops_naming_it(spark, tmp_path, kind):
    pv = write_pageviews(tmp_path)
    lines = "".join(f"en Title_{i} {i % 50} 0\n" for i in range(200_000)).encode()
    whole = gzip.compress(lines)
    bad = tmp_path / "pageviews-20240101-020000.gz"
    bad.write_bytes({"not_format": b"PAR1 a parquet file", "empty": b"", "cut": whole[: len(whole) // 2]}[kind])
    cfg = wiki_cfg(tmp_path).queries
    with pytest.raises(inputs.InputFileError) as e:
        wikipedia.pageview_titles(spark, [*pv, str(bad)], cfg)
    assert e.value.path == str(bad) and "\n" not in str(e.value)
    assert e.value.reason == {"not_format": "not_format", "empty": "empty", "cut": "truncated"}[kind]
