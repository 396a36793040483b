"""The query list (the CLIP paper's "500,000 queries", MetaCLIP's metadata.json): `wit queries build`.

Sources, in the configured order (default: WordNet + "0".."99", Wikipedia unigrams, bigrams, titles),
each adding only entries not already in the list, up to ``queries.budget`` entries:

- ``wordnet``: the first lemma of every synset (``_`` → space; nouns, verbs, adjectives, adverbs,
  each in database file order) from a WordNet 3.0 database folder, then the strings "0".."99";
- ``unigrams``: Wikipedia tokens counted >= ``min_unigram_count`` times (most frequent first);
- ``bigrams``: adjacent token pairs with PMI = log2(c(w1 w2)·N / (c(w1)·c(w2))) >= ``min_bigram_pmi``
  (N = total unigram tokens), most frequent first;
- ``titles``: English Wikipedia article titles with summed views >= ``min_title_views`` in hourly
  pageview files (``domain title views bytes``; domain ``en``; no ``:``; ``_`` → space), most viewed first;
- ``wordfreq``: the offline stand-in for the three Wikipedia sources (no dump needed): English words
  of the ``wordfreq`` package (built from Wikipedia, subtitles, news, web text …) with Zipf frequency
  >= ``wordfreq_min_zipf``, most frequent first, each also capitalised ("red", "Red"); tokens with
  digits or never-matching characters skipped.

Tokenisation of Wikipedia text (pipeline.wikipedia; after wikitext markup is stripped): the matcher's spacing (pad, put
spaces around ``, . ; : ? ! `` ` and blank tab/CR/LF), split on whitespace, strip surrounding
brackets and quotes; single non-alphanumeric tokens are separators (bigrams never span them).
Counting runs in Spark; only the final (≤ budget) list is collected and written by the driver, so
building twice gives byte-identical files. Ties are broken by the entry string, never by hashing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline import inputs, log, storage
from pipeline.errors import UserError
from pipeline.query_text import _STRIP, _WRAP, spacing, valid_entry  # noqa: F401 (match and tests import them here)
from pipeline.stage import Flag, StageContext, stage

PARQUET_NAME = "queries.parquet"
METADATA_NAME = "metadata.json"
WORDNET_FILES = ["data.noun", "data.verb", "data.adj", "data.adv"]
WIKI_SOURCES = ("unigrams", "bigrams", "titles")
# --------------------------------------------------------------------------- sources
def wordnet_entries(wordnet_dir: str) -> list[str]:
    """First lemma of every WordNet synset, database file order, ``_`` → space, markers like ``(a)`` cut."""
    paths = [os.path.join(wordnet_dir, f) for f in WORDNET_FILES]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UserError(
            f"WordNet database not found in {wordnet_dir} (missing {os.path.basename(missing[0])}): install Debian's "
            "wordnet-base, set queries.wordnet_dir, or drop 'wordnet' from queries.sources"
        )
    out = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):  # licence header
                    continue
                parts = line.split(" ", 5)
                if len(parts) < 5:
                    continue
                lemma = re.sub(r"\((?:a|p|ip)\)$", "", parts[4])
                out.append(lemma.replace("_", " "))
    return out


def number_entries() -> list[str]:
    return [str(i) for i in range(100)]


def wordfreq_entries(min_zipf: float) -> list[tuple[str, int]]:
    """(word, frequency per billion words) of wordfreq's English list down to ``min_zipf``, each word
    followed by its capitalised form (matching is case-sensitive; titles and sentence starts are capitalised)."""
    import wordfreq

    out = []
    for w in wordfreq.iter_wordlist("en", "large"):
        z = wordfreq.zipf_frequency(w, "en", "large")
        if z < min_zipf:
            break
        # wordfreq writes every digit as 0 ("00" = any two-digit number); those and tokens holding a
        # character the matcher space-wraps ("u.s") can never match a caption.
        if any(ch.isdigit() for ch in w) or any(ch in w for ch in _WRAP):
            continue
        count = round(wordfreq.word_frequency(w, "en", "large") * 1e9)
        out.append((w, count))
        cap = w[:1].upper() + w[1:]
        if cap != w:  # wordfreq lowercases; Wikipedia's case-sensitive counts hold "Red" as well as "red"
            out.append((cap, count))
    return out


# --------------------------------------------------------------------------- the list
@dataclass
class QueryList:
    """The list being built: entries in id order, the source and count of each, figures per source."""

    budget: int
    entries: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    counts: list[int | None] = field(default_factory=list)
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)
    _seen: set = field(default_factory=set, repr=False)

    def add(self, source: str, items: Iterable[str | tuple[str, int | None]]) -> None:
        fig = self.per_source.setdefault(source, {"offered": 0, "added": 0, "duplicate": 0, "invalid": 0, "over_budget": 0})
        for item in items:
            entry, count = item if isinstance(item, tuple) else (item, None)
            fig["offered"] += 1
            if not valid_entry(entry):
                fig["invalid"] += 1
            elif entry in self._seen:
                fig["duplicate"] += 1
            elif len(self.entries) >= self.budget:
                fig["over_budget"] += 1
            else:
                self._seen.add(entry)
                self.entries.append(entry)
                self.sources.append(source)
                self.counts.append(count)
                fig["added"] += 1

    def table(self):
        import pyarrow as pa

        from schemas import QUERIES

        return pa.table({"entry_id": pa.array(range(len(self.entries)), pa.int32()),
                         "entry": pa.array(self.entries, pa.string()),
                         "source": pa.array(self.sources, pa.string()),
                         "count": pa.array(self.counts, pa.int64())}, schema=QUERIES)


def build_query_list(cfg, spark_factory=None) -> tuple[QueryList, dict[str, Any]]:
    """Build the list from ``cfg.queries`` (a QueriesConfig). Spark starts only for Wikipedia sources."""
    qc = cfg.queries
    notes: list[str] = []
    sources = list(qc.sources)
    have_wiki = {"unigrams": bool(qc.wikipedia), "bigrams": bool(qc.wikipedia), "titles": bool(qc.pageviews)}
    wanted = [s for s in sources if s in WIKI_SOURCES]
    if wanted and not any(have_wiki[s] for s in wanted):
        at = sources.index(wanted[0])
        sources = [s for s in sources if s not in WIKI_SOURCES]
        if "wordfreq" not in sources:
            sources.insert(at, "wordfreq")
        notes.append(f"no Wikipedia input (queries.wikipedia / queries.pageviews unset): {', '.join(wanted)} "
                     "replaced by the offline wordfreq list")
    for s in wanted:
        if s in sources and not have_wiki[s]:
            sources.remove(s)
            notes.append(f"{s} skipped: queries.{'pageviews' if s == 'titles' else 'wikipedia'} is not set")
    for n in notes:
        log.warn(f"queries: {n}")

    ql = QueryList(qc.budget)
    wiki: dict[str, list] = {}
    info: dict[str, Any] = {"sources": sources, "notes": notes}
    spark = None
    for src in sources:
        if len(ql.entries) >= qc.budget:
            break
        log.info(f"queries: adding {src} ({len(ql.entries)} entries so far)")
        if src == "wordnet":
            ql.add("wordnet", wordnet_entries(qc.wordnet_dir))
            ql.add("numbers", number_entries())
        elif src == "wordfreq":
            ql.add("wordfreq", wordfreq_entries(qc.wordfreq_min_zipf))
        elif src in ("unigrams", "bigrams"):
            from pipeline.wikipedia import wikipedia_grams

            if not wiki:
                spark = spark or spark_factory()
                wiki["unigrams"], wiki["bigrams"], info["wikipedia"] = wikipedia_grams(spark, qc.wikipedia, qc)
            ql.add(src, wiki[src])
        elif src == "titles":
            from pipeline.wikipedia import pageview_titles

            spark = spark or spark_factory()
            ql.add("titles", pageview_titles(spark, qc.pageviews, qc))
    info["per_source"] = ql.per_source
    return ql, info


def write_query_list(folder: str, ql_table) -> None:
    """queries.parquet (pyarrow, deterministic bytes) + metadata.json (MetaCLIP's format) into a folder."""
    import pyarrow.parquet as pq

    fs, p = storage.fs_for(folder)
    fs.makedirs(p, exist_ok=True)
    with fs.open(f"{p}/{PARQUET_NAME}", "wb") as f:
        pq.write_table(ql_table, f, compression="zstd")
    with fs.open(f"{p}/{METADATA_NAME}", "w", encoding="utf-8") as f:
        json.dump(ql_table.column("entry").to_pylist(), f, ensure_ascii=False)


def load_query_list(path: str) -> list[str]:
    """Entries (index = entry id) from a list folder, queries.parquet, a metadata.json or a .txt (one a line).

    A .txt list skips blank lines; ids count the remaining lines from 0.
    """
    storage.require_exists(path, "query list")
    fs, p = storage.fs_for(path)
    if fs.isdir(p):
        for name in (PARQUET_NAME, METADATA_NAME):
            if fs.exists(f"{p}/{name}"):
                return load_query_list(f"{path.rstrip('/')}/{name}")
        raise UserError(f"query list folder {path} has neither {PARQUET_NAME} nor {METADATA_NAME}")
    if p.endswith(".parquet"):
        import pyarrow.parquet as pq

        inputs.require_parquet([path], "query list", ["entry"])
        with fs.open(p, "rb") as f:
            t = pq.read_table(f)
        entries = t.column("entry").to_pylist()
        if "entry_id" in t.column_names:
            ids = t.column("entry_id").to_pylist()
            if sorted(ids) != list(range(len(ids))):
                raise UserError(f"query list {path}: entry_id must be 0..{len(ids) - 1} without gaps")
            out = [""] * len(ids)
            for i, e in zip(ids, entries):
                out[i] = e
            entries = out
    elif p.endswith(".json"):
        with fs.open(p, "r", encoding="utf-8") as f:
            try:
                entries = json.load(f)
            except json.JSONDecodeError as e:
                raise UserError(f"query list {path} is not valid JSON: {e}") from None
        if not isinstance(entries, list):
            raise UserError(f"query list {path}: expected a JSON list of strings (MetaCLIP metadata.json)")
    else:
        if problem := inputs.text_problem(path):
            raise inputs.InputFileError(path, *problem, "query list")
        with fs.open(p, "r", encoding="utf-8") as f:
            entries = [line.rstrip("\r\n") for line in f if line.strip()]
    if not all(isinstance(e, str) for e in entries):
        raise UserError(f"query list {path}: every entry must be a string")
    if not entries:
        raise UserError(f"query list {path} is empty")
    return entries


def queries_path(cfg) -> str:
    """Where the matcher reads the list: queries.path when set, else <output_dir>/queries."""
    return cfg.queries.path or cfg.path("queries")


# --------------------------------------------------------------------------- the stage
def _comma_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


@stage("queries", order=40, input=None, output="queries", command="queries build",
       help="build the ~500k query list (WordNet, Wikipedia words, bigrams, titles)",
       description="Build the query list (CLIP's 500k queries, MetaCLIP's recipe) from WordNet + \"0\"..\"99\", "
       "Wikipedia unigrams (count >= 100), bigrams (PMI >= 30), titles (pageviews >= 70), or offline from "
       "the wordfreq package. Each source adds only new entries, up to the budget. Output: "
       "<output_dir>/queries/queries.parquet (entry_id, entry, source, count), metadata.json (MetaCLIP's "
       "JSON list; index = entry id), _stats.json.",
       output_help="output folder (default: <output_dir>/queries)",
       options=[Flag("--sources", key="queries.sources", metavar="LIST", type=_comma_list,
                     help="comma list, in order, of wordnet,unigrams,bigrams,titles,wordfreq (config queries.sources)"),
                Flag("--budget", key="queries.budget", metavar="N", type=int),
                Flag("--wordnet-dir", key="queries.wordnet_dir", metavar="PATH"),
                Flag("--wikipedia", key="queries.wikipedia", metavar="PATH",
                     help="pages-articles dump: the file, part files or multistream (.bz2/.gz/.xml), a folder or glob "
                          "of parts, a file listing paths; or Parquet/JSONL with a text column"),
                Flag("--pageviews", key="queries.pageviews", nargs="+", metavar="PATH",
                     help="hourly pageview files (domain title views bytes)"),
                Flag("--min-unigram-count", key="queries.min_unigram_count", metavar="N", type=int),
                Flag("--min-bigram-pmi", key="queries.min_bigram_pmi", metavar="X", type=float),
                Flag("--min-bigram-count", key="queries.min_bigram_count", metavar="N", type=int),
                Flag("--min-title-views", key="queries.min_title_views", metavar="N", type=int),
                Flag("--wordfreq-min-zipf", key="queries.wordfreq_min_zipf", metavar="X", type=float),
                Flag("--from-file", key="queries.path", metavar="PATH",
                     help="convert an existing list (parquet, metadata.json, .txt) instead")])
def run_queries(ctx: StageContext) -> None:
    """Build the query list into the output (default <output_dir>/queries).

    With ``queries.path`` set, that list (parquet, metadata.json or .txt) is copied into the standard
    format instead (source "file"), so later stages and the report always find the same files.
    """
    cfg, stats = ctx.cfg, ctx.stats
    if cfg.queries.path:
        ql = QueryList(cfg.queries.budget)
        ql.add("file", load_query_list(cfg.queries.path))
        info = {"sources": ["file"], "file": cfg.queries.path, "per_source": ql.per_source, "notes": []}
    else:
        ql, info = build_query_list(cfg, lambda: ctx.spark)
    if not ql.entries:
        raise UserError("queries: the list is empty (check queries.sources and its inputs)")
    stats.input_rows = sum(f["offered"] for f in ql.per_source.values())
    stats.output_rows = len(ql.entries)
    for f in ql.per_source.values():
        for reason in ("duplicate", "invalid", "over_budget"):
            stats.drop(reason, f[reason])
    stats.extra = {**info, "budget": cfg.queries.budget, "entries": len(ql.entries),
                   "params": cfg.queries.model_dump(mode="json")}
    write_query_list(ctx.tmp, ql.table())
    log.info(f"queries: {len(ql.entries)} entries → {ctx.output} "
             + ", ".join(f"{k}={v['added']}" for k, v in ql.per_source.items()))
