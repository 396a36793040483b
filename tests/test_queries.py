"""The query list: sources, order, budget, Wikipedia XML/JSONL + pageviews via Spark, stable bytes."""

from __future__ import annotations

import gzip
import json
import math
import os

import pyarrow.parquet as pq
import pytest

from pipeline import queries
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


def write_dump(path) -> None:
    pages = "".join(
        f"  <page>\n    <title>{_xml_escape(t)}</title>\n    <ns>{ns}</ns>\n    <id>{i}</id>\n"
        + ('    <redirect title="Cat" />\n' if text.startswith("#REDIRECT") else "")
        + f'    <revision><id>{100 + i}</id><text bytes="{len(text)}" xml:space="preserve">{_xml_escape(text)}</text></revision>\n'
        "  </page>\n"
        for i, (t, ns, text) in enumerate(PAGES)
    )
    path.write_text('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">\n'
                    "  <siteinfo><sitename>Wikipedia</sitename></siteinfo>\n" + pages + "</mediawiki>\n")


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
    text = queries.wikitext_to_text(PAGES[0][2] + "\n" + PAGES[1][2] + "\n" + PAGES[2][2] + " [http://x.org Site] a&amp;b")
    for gone in ("Hiddenword", "Nestword", "Refword", "Fileword", "caption", "Commentword", "Category", "crossing",
                 "{{", "[[", "'''", "=="):
        assert gone not in text
    for kept in ("zebras run", "Bold zebras", "Alpha Beta gamma, the bird.", "Site", "a&b"):
        assert kept in text


def test_tokenize_marks_separators():
    assert queries.tokenize('The cat, ("New York") - dog.') == ["The", "cat", None, "New", "York", None, "dog", None]


def test_gram_counts_skip_redirects():
    c = queries.gram_counts(["#REDIRECT [[Cat]]", "a b a", None], wikitext=True)
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
