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

Tokenisation of Wikipedia text (after wikitext markup is stripped): the matcher's spacing (pad, put
spaces around ``, . ; : ? ! `` ` and blank tab/CR/LF), split on whitespace, strip surrounding
brackets and quotes; single non-alphanumeric tokens are separators (bigrams never span them).
Counting runs in Spark; only the final (≤ budget) list is collected and written by the driver, so
building twice gives byte-identical files. Ties are broken by the entry string, never by hashing.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline import inputs, log, storage
from pipeline.errors import UserError
from pipeline.stage import StageContext, stage

PARQUET_NAME = "queries.parquet"
METADATA_NAME = "metadata.json"
WORDNET_FILES = ["data.noun", "data.verb", "data.adj", "data.adv"]
WIKI_SOURCES = ("unigrams", "bigrams", "titles")
_WRAP = ",.;:?!`"
_BLANK = "\t\r\n"
_STRIP = "\"'()[]{}<>«»“”‘’"


def spacing(text: str) -> str:
    """MetaCLIP's text normalisation: pad with spaces, space-wrap ``, . ; : ? ! ` ``, blank tab/CR/LF."""
    s = f" {text} "
    for c in _WRAP:
        if c in s:
            s = s.replace(c, f" {c} ")
    for c in _BLANK:
        if c in s:
            s = s.replace(c, " ")
    return s


def valid_entry(entry: str) -> bool:
    """Entries that are empty/blank or a single punctuation/symbol character are dropped."""
    return bool(entry.strip()) and not (len(entry) == 1 and not entry.isalnum())


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


# --------------------------------------------------------------------------- Wikipedia text
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S | re.I)
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|.*?\|\}", re.S)
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXTLINK = re.compile(r"\[(?:https?:)?//[^\s\]]*\s*([^\]]*)\]")
_TAG = re.compile(r"<[^>]{0,200}>")
_HEADING = re.compile(r"^=+\s*(.*?)\s*=+\s*$", re.M)
_LIST = re.compile(r"^[*#:;]+\s*", re.M)
_QUOTES = re.compile(r"'{2,}")
_MAGIC = re.compile(r"__[A-Z]+__")


def _link(m: re.Match) -> str:
    parts = m.group(1).split("|")
    return "" if ":" in parts[0] else parts[-1]  # File:, Category:, interwiki links carry no prose


def wikitext_to_text(s: str) -> str:
    """Plain prose from wikitext: comments, refs, templates, tables, files/categories removed; links → labels."""
    s = _COMMENT.sub(" ", s)
    s = _REF.sub(" ", s)
    for _ in range(10):  # nested templates, innermost first
        s, n = _TEMPLATE.subn(" ", s)
        if not n:
            break
    s = _TABLE.sub(" ", s)
    for _ in range(5):  # links inside file captions
        s, n = _LINK.subn(_link, s)
        if not n:
            break
    s = _EXTLINK.sub(r"\1", s)
    s = _TAG.sub(" ", s)
    s = _HEADING.sub(r"\1", s)
    s = _LIST.sub("", s)
    s = _QUOTES.sub("", s)
    s = _MAGIC.sub(" ", s)
    return html.unescape(s)


def tokenize(text: str) -> list[str | None]:
    """Tokens of plain text (see module doc); ``None`` marks a separator that bigrams never span."""
    out: list[str | None] = []
    for tok in spacing(text).split():
        t = tok.strip(_STRIP)
        out.append(t if t and valid_entry(t) else None)
    return out


def gram_counts(texts: Iterable[str | None], wikitext: bool) -> Counter:
    """Unigram and bigram (``"w1 w2"``) counts of some page texts."""
    c: Counter = Counter()
    for text in texts:
        if not text or (wikitext and text.lstrip()[:9].upper() == "#REDIRECT"):
            continue
        toks = tokenize(wikitext_to_text(text) if wikitext else text)
        c.update(t for t in toks if t is not None)
        c.update(f"{a} {b}" for a, b in zip(toks, toks[1:]) if a is not None and b is not None)
    return c


def _count_task(wikitext: bool):
    def task(batches):
        import pyarrow as pa

        for batch in batches:
            c = gram_counts(batch.column("text").to_pylist(), wikitext)
            yield pa.RecordBatch.from_arrays(
                [pa.array(list(c.keys()), pa.string()), pa.array(list(c.values()), pa.int64())], names=["gram", "n"]
            )

    return task


# --------------------------------------------------------------------------- Wikipedia input
_INDEX_LINE = re.compile(rb"^\d+:\d+:")
_KINDS = {"xml": "a MediaWiki XML dump", "parquet": "Parquet", "jsonl": "JSON lines"}


def classify_wikipedia_file(path: str) -> str:
    """What a Wikipedia input file holds, by content (names vary: ``…articles1.xml-p1p41242.bz2``):
    "xml" (root ``<mediawiki``, plain, bz2 incl. multistream, or gzip), "index" (a multistream index,
    ``offset:page_id:title`` lines), "parquet", "jsonl", or "paths" (a text file listing paths).
    Anything else stops with one line naming the file."""
    comp, head = inputs.decompressed_head(path)
    where = "" if comp == "none" else f" ({comp}-compressed)"
    if not head:
        why = "is empty" if comp == "none" else "could not be decompressed: cut short or damaged"
        raise inputs.InputFileError(path, inputs.EMPTY, f"{why}{where}", "queries.wikipedia")
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"PAR1"):
        return "parquet"
    if text.startswith(b"<"):
        if b"<mediawiki" in text:
            return "xml"
        raise inputs.InputFileError(path, inputs.WRONG_SCHEMA, f"XML{where} but not a MediaWiki dump (no <mediawiki> root)",
                                    "queries.wikipedia")
    if text.startswith(b"{"):
        return "jsonl"
    lines = [ln for ln in text.split(b"\n")[:20] if ln.strip()]
    if len(text) == len(head) and len(head) == 1 << 16:
        lines = lines[:-1]  # the last line read may be cut
    if lines and all(_INDEX_LINE.match(ln) for ln in lines):
        return "index"
    listed = [ln for ln in lines if not ln.startswith(b"#")]
    if comp == "none" and listed and all(_listed(path, ln) for ln in listed):
        return "paths"
    raise inputs.InputFileError(
        path, inputs.NOT_FORMAT, f"not a Wikipedia dump{where}: want a pages-articles XML dump (root <mediawiki>; "
        ".xml, .bz2 incl. multistream and part files, .gz), Parquet or JSONL of text, or a file listing such paths",
        "queries.wikipedia")


def _listed(list_file: str, line: bytes) -> bool:
    try:
        return storage.exists(_resolve_listed(list_file, line.decode("utf-8").strip()))
    except (UnicodeDecodeError, ValueError, OSError):
        return False


def _resolve_listed(list_file: str, entry: str) -> str:
    """A path in a paths file: absolute or a URL as is, else relative to the paths file's folder."""
    if "://" in entry or entry.startswith("/"):
        return entry
    return f"{list_file.rsplit('/', 1)[0] if '/' in list_file else '.'}/{entry}"


def wikipedia_files(path: str, _depth: int = 0) -> tuple[str, list[str], list[str]]:
    """(kind, files, skipped index files) of ``queries.wikipedia``: a file, a folder or glob of parts,
    or a paths file; every file must hold the same kind of data."""
    from pipeline.extract.inputs import resolve_inputs

    if not any(ch in path for ch in "*?["):
        storage.require_exists(path, "queries.wikipedia")
    fs, p = storage.fs_for(path)
    found = resolve_inputs([path]) if any(ch in path for ch in "*?[") or fs.isdir(p) else [path]
    by_kind: dict[str, list[str]] = {}
    for f in found:
        kind = classify_wikipedia_file(f)
        if kind == "paths" and _depth == 0:
            with storage.fs_for(f)[0].open(storage.fs_for(f)[1], "r", encoding="utf-8") as fh:
                listed = [_resolve_listed(f, ln.strip()) for ln in fh if ln.strip() and not ln.startswith("#")]
            for item in listed:
                k, files, idx = wikipedia_files(item, 1)
                by_kind.setdefault(k, []).extend(files)
                by_kind.setdefault("index", []).extend(idx)
        elif kind == "paths":
            raise UserError(f"queries.wikipedia: {f} is a paths file listed in a paths file")
        else:
            by_kind.setdefault(kind, []).append(f)
    index = by_kind.pop("index", [])
    if len(by_kind) > 1:
        raise UserError(f"queries.wikipedia: {path} mixes " + " and ".join(
            f"{_KINDS[k]} ({v[0]})" for k, v in sorted(by_kind.items())))
    if not by_kind:
        raise UserError(f"queries.wikipedia: {path} holds only multistream index files, not the dump itself")
    (kind, files), = by_kind.items()
    return kind, list(dict.fromkeys(files)), index


def dump_pages(path: str) -> Iterator[tuple[int, str | None]]:
    """(namespace, wikitext) of each page of a dump file (plain, gzip, bz2 incl. multistream), streamed."""
    import bz2
    import gzip
    import xml.etree.ElementTree as ET

    fs, p = storage.fs_for(path)
    with fs.open(p, "rb") as raw:
        kind = inputs.kind_of(raw.read(8))
        raw.seek(0)
        f = bz2.BZ2File(raw) if kind == "bz2" else gzip.GzipFile(fileobj=raw) if kind == "gzip" else raw
        for _, el in ET.iterparse(f, events=("end",)):
            if el.tag.rpartition("}")[2] != "page":
                continue
            ns = text = None
            for child in el:
                tag = child.tag.rpartition("}")[2]
                if tag == "ns":
                    ns = child.text
                elif tag == "revision":
                    text = next((c.text for c in child if c.tag.rpartition("}")[2] == "text"), None)
            yield int(ns or 0), text
            el.clear()


def _dump_count_task(damaged):
    """Gram counts of whole dump files (one per task); a file that cannot be read to its end is
    reported through the ``damaged`` accumulator, so the driver stops naming it."""
    def task(files):
        import xml.etree.ElementTree as ET
        import zlib

        for path in files:
            c: Counter = Counter()
            try:
                for ns, text in dump_pages(path):
                    if ns == 0:
                        c.update(gram_counts([text], True))
            except (ET.ParseError, EOFError, OSError, ValueError, zlib.error) as e:
                cut = isinstance(e, EOFError) or "no element found" in str(e) or "unclosed token" in str(e)
                damaged.add([(path, inputs.TRUNCATED if cut else inputs.UNREADABLE, str(e) or type(e).__name__)])
                continue
            yield from c.items()

    return task


class _ListParam:
    """Accumulator of lists (damaged files found by tasks)."""

    @staticmethod
    def zero(value):
        return []

    @staticmethod
    def addInPlace(a, b):
        return a + b


def wikipedia_gram_rows(spark, path: str):
    """(DataFrame[gram, n] of per-task counts, damaged-files accumulator or None, info) for ``queries.wikipedia``."""
    from pyspark.accumulators import AccumulatorParam
    from pyspark.sql import functions as F

    kind, files, index = wikipedia_files(path)
    info = {"format": kind, "files": len(files), "skipped_index_files": len(index)}
    if index:
        log.info(f"queries: {len(index)} multistream index file(s) skipped (the dump itself is read)")
    if kind == "xml":
        sc = spark.sparkContext
        damaged = sc.accumulator([], type("ListParam", (_ListParam, AccumulatorParam), {})())
        rdd = sc.parallelize(files, len(files)).mapPartitions(_dump_count_task(damaged))
        return spark.createDataFrame(rdd, "gram string, n long"), damaged, info
    for f, reason, detail in inputs.check_parquet_inputs(files, ["text"]) if kind == "parquet" else ():
        raise inputs.InputFileError(f, reason, detail, "queries.wikipedia")
    sp = [storage.to_spark_path(f) for f in files]
    df = spark.read.parquet(*sp) if kind == "parquet" else spark.read.json(sp)
    if "text" not in df.columns:
        raise UserError(f"queries.wikipedia: {path} has no 'text' column (columns: {', '.join(df.columns)})")
    return df.select(F.col("text").cast("string")).mapInArrow(_count_task(False), "gram string, n long"), None, info


def wikipedia_grams(spark, path: str, cfg) -> tuple[list[tuple[str, int]], list[tuple[str, int]], dict]:
    """(unigrams ≥ min count, bigrams with PMI ≥ min) from Wikipedia, each ≤ budget, in list order."""
    from pyspark.sql import functions as F
    from pyspark.storagelevel import StorageLevel

    rows, damaged, info = wikipedia_gram_rows(spark, path)
    grams = rows.groupBy("gram").agg(F.sum("n").alias("c")).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        uni = grams.where(~F.col("gram").contains(" "))
        total = uni.agg(F.sum("c")).first()[0] or 0
        for f, reason, detail in (damaged.value if damaged else [])[:1]:  # a partial dump would skew every count
            raise inputs.InputFileError(f, reason, f"damaged dump file ({detail}); download it again", "queries.wikipedia")
        unigrams = [(r.gram, r.c) for r in uni.where(F.col("c") >= cfg.min_unigram_count)
                    .orderBy(F.desc("c"), F.asc("gram")).limit(cfg.budget).collect()]
        bi = (grams.where(F.col("gram").contains(" ")).where(F.col("c") >= cfg.min_bigram_count)
              .withColumn("w1", F.split("gram", " ").getItem(0)).withColumn("w2", F.split("gram", " ").getItem(1)))
        u1 = uni.select(F.col("gram").alias("w1"), F.col("c").alias("c1"))
        u2 = uni.select(F.col("gram").alias("w2"), F.col("c").alias("c2"))
        scored = (bi.join(u1, "w1").join(u2, "w2")
                  .withColumn("pmi", F.log2(F.col("c") * F.lit(float(total)) / (F.col("c1") * F.col("c2")))))
        bigrams = [(r.gram, r.c) for r in scored.where(F.col("pmi") >= cfg.min_bigram_pmi)
                   .orderBy(F.desc("c"), F.asc("gram")).limit(cfg.budget).collect()]
        n_distinct = uni.count()
    finally:
        grams.unpersist()
    return unigrams, bigrams, {**info, "tokens": int(total), "distinct_tokens": n_distinct}


def pageview_titles(spark, paths: list[str], cfg) -> list[tuple[str, int]]:
    """English Wikipedia titles with summed views ≥ min_title_views, most viewed first."""
    from pyspark.sql import functions as F

    for p in paths:
        storage.require_exists(p, "queries.pageviews file")
    lines = spark.read.text([storage.to_spark_path(p) for p in paths])
    parts = F.split("value", " ")
    rows = (lines.where(F.size(parts) == 4).where(parts.getItem(0) == "en")
            .select(parts.getItem(1).alias("title"), F.expr("try_cast(split(value, ' ')[2] AS BIGINT)").alias("views"))
            .where(F.col("views").isNotNull() & ~F.col("title").contains(":"))
            .select(F.translate("title", "_", " ").alias("title"), "views")
            .groupBy("title").agg(F.sum("views").alias("views"))
            .where(F.col("views") >= cfg.min_title_views)
            .orderBy(F.desc("views"), F.asc("title")).limit(cfg.budget))
    return [(r.title, r.views) for r in rows.collect()]


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
            if not wiki:
                spark = spark or spark_factory()
                wiki["unigrams"], wiki["bigrams"], info["wikipedia"] = wikipedia_grams(spark, qc.wikipedia, qc)
            ql.add(src, wiki[src])
        elif src == "titles":
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
@stage("queries", input=None, output="queries")
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


# --------------------------------------------------------------------------- CLI
def register(sub, common) -> None:
    from pipeline.cli import flag
    from pipeline.stats import summary_line

    p = sub.add_parser("queries", help="build the ~500k query list (WordNet, Wikipedia words, bigrams, titles)",
                       description="Query list commands. `wit queries build` writes <output_dir>/queries/.")
    qsub = p.add_subparsers(dest="queries_command", metavar="ACTION", title="actions", required=True)
    b = qsub.add_parser(
        "build", parents=[common], help="build the query list",
        description="Build the query list (CLIP's 500k queries, MetaCLIP's recipe) from WordNet + \"0\"..\"99\", "
        "Wikipedia unigrams (count >= 100), bigrams (PMI >= 30), titles (pageviews >= 70), or offline from "
        "the wordfreq package. Each source adds only new entries, up to the budget. Output: "
        "<output_dir>/queries/queries.parquet (entry_id, entry, source, count), metadata.json (MetaCLIP's "
        "JSON list; index = entry id), _stats.json.",
    )
    flag(b, "--sources", key="queries.sources", metavar="LIST",
         type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
         help="comma list, in order, of wordnet,unigrams,bigrams,titles,wordfreq (config queries.sources)")
    flag(b, "--budget", key="queries.budget", metavar="N", type=int)
    flag(b, "--wordnet-dir", key="queries.wordnet_dir", metavar="PATH")
    flag(b, "--wikipedia", key="queries.wikipedia", metavar="PATH", help="pages-articles XML dump (.xml/.bz2), or Parquet/JSONL of (title, text)")
    flag(b, "--pageviews", key="queries.pageviews", nargs="+", metavar="PATH", help="hourly pageview files (domain title views bytes)")
    flag(b, "--min-unigram-count", key="queries.min_unigram_count", metavar="N", type=int)
    flag(b, "--min-bigram-pmi", key="queries.min_bigram_pmi", metavar="X", type=float)
    flag(b, "--min-bigram-count", key="queries.min_bigram_count", metavar="N", type=int)
    flag(b, "--min-title-views", key="queries.min_title_views", metavar="N", type=int)
    flag(b, "--wordfreq-min-zipf", key="queries.wordfreq_min_zipf", metavar="X", type=float)
    flag(b, "--from-file", key="queries.path", metavar="PATH", help="convert an existing list (parquet, metadata.json, .txt) instead")
    b.add_argument("--output", metavar="PATH", help="output folder (default: <output_dir>/queries)")
    b.add_argument("--overwrite", action="store_true", help="redo a complete output")
    b.set_defaults(func=lambda args, cfg: print(summary_line(run_queries(cfg, output=args.output, overwrite=args.overwrite))) or 0)

