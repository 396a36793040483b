"""Wikipedia as a query source: the dump files as Wikimedia publishes them, their prose, gram counts
(for ``unigrams``/``bigrams``) and pageview titles (``titles``); see pipeline.queries for the list.

Dump files are found by content, not name (``…articles1.xml-p1p41242.bz2``, multistream and its index,
folders, globs, paths files) and each is parsed as a stream by one Spark task.
"""

from __future__ import annotations

import html
import io
import re
from collections import Counter
from collections.abc import Iterable, Iterator

from pipeline import inputs, log, storage
from pipeline.errors import UserError
from pipeline.query_text import _STRIP, spacing, valid_entry

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
    """(kind, files, multistream index files) of ``queries.wikipedia``: a file, a folder or glob of parts,
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


# A multistream file is split at its index's stream offsets into tasks of about this many compressed bytes.
MULTISTREAM_TASK_BYTES = 16 << 20


def index_for(dump: str) -> str:
    """The index file Wikimedia publishes beside a multistream dump file (part or whole)."""
    folder, _, name = dump.rpartition("/")
    name = name.replace("-multistream", "-multistream-index", 1).replace(".xml", ".txt", 1)
    return f"{folder}/{name}" if folder else name


def read_units(files: list[str], index: list[str]) -> list[str | tuple[str, int, int]]:
    """What the tasks read: each dump file whole, or for a multistream file whose index was given,
    byte ranges of whole bz2 streams (about MULTISTREAM_TASK_BYTES each), so one big file reads in parallel."""
    indexes = set(index)
    units: list[str | tuple[str, int, int]] = []
    for f in files:
        idx = index_for(f)
        if idx not in indexes:
            units.append(f)
            continue
        fs, p = storage.fs_for(idx)
        with fs.open(p, "rb") as raw:
            offsets = sorted({int(line.split(b":", 1)[0]) for line in inputs.decompressing(raw)[1] if line.strip()})
        size = storage.fs_for(f)[0].size(storage.fs_for(f)[1])
        start = offsets[0] if offsets else 0  # the stream before the first page's holds only <siteinfo>
        for off in offsets[1:]:
            if off - start >= MULTISTREAM_TASK_BYTES:
                units.append((f, start, off))
                start = off
        units.append((f, start, size))
    return units


def _stream_range(path: str, start: int, end: int) -> io.BytesIO:
    """The pages of bytes [start, end) of a multistream file (whole bz2 streams) as one XML document."""
    import bz2

    fs, p = storage.fs_for(path)
    with fs.open(p, "rb") as raw:
        raw.seek(start)
        data = raw.read(end - start)
    out = []
    while data:
        d = bz2.BZ2Decompressor()
        out.append(d.decompress(data))
        if not d.eof:
            raise EOFError(f"bz2 stream cut off in bytes {start}-{end}")
        data = d.unused_data
    return io.BytesIO(b"<pages>" + b"".join(out).replace(b"</mediawiki>", b"") + b"</pages>")


def dump_pages(unit: str | tuple[str, int, int]) -> Iterator[tuple[int, str | None]]:
    """(namespace, wikitext) of each page of a dump file (plain, gzip, bz2 incl. multistream) or of a
    multistream byte range (``read_units``), streamed."""
    import xml.etree.ElementTree as ET

    if isinstance(unit, tuple):
        yield from _pages(ET.iterparse(_stream_range(*unit), events=("end",)))
        return
    fs, p = storage.fs_for(unit)
    with fs.open(p, "rb") as raw:
        yield from _pages(ET.iterparse(inputs.decompressing(raw)[1], events=("end",)))


def _pages(events) -> Iterator[tuple[int, str | None]]:
    for _, el in events:
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


def dump_file_counts(unit: str | tuple[str, int, int]) -> Counter:
    """Unigram and bigram counts of the main-namespace pages of a dump file or multistream range."""
    c: Counter = Counter()
    for ns, text in dump_pages(unit):
        if ns == 0:
            c.update(gram_counts([text], True))
    return c


def pageview_file_counts(path: str) -> Counter:
    """Views per English Wikipedia title (``_`` → space; no ``:``) of an hourly pageview file
    (``domain title views bytes``, plain or compressed); other lines are skipped."""
    c: Counter = Counter()
    fs, p = storage.fs_for(path)
    with fs.open(p, "rb") as raw:
        for line in inputs.decompressing(raw)[1]:
            parts = line.rstrip(b"\r\n").split(b" ")
            if len(parts) != 4 or parts[0] != b"en" or b":" in parts[1] or not parts[2].isdigit():
                continue
            c[parts[1].decode("utf-8", "replace").replace("_", " ")] += int(parts[2])
    return c


class _ListParam:
    """Accumulator of lists (damaged files found by tasks)."""

    @staticmethod
    def zero(value):
        return []

    @staticmethod
    def addInPlace(a, b):
        return a + b


def per_file_counts(spark, files: list, count_file, schema: str):
    """(DataFrame of ``count_file(unit)``'s (key, n) items, one task a file or ``read_units`` range;
    accumulator of damaged files).

    A file that fails while read is reported (path, reason, detail), not raised, so the driver can
    stop with a line naming it instead of a failed Spark job."""
    from pyspark.accumulators import AccumulatorParam

    sc = spark.sparkContext
    damaged = sc.accumulator([], type("ListParam", (_ListParam, AccumulatorParam), {})())

    def task(paths):
        for path in paths:
            try:
                counts = count_file(path)
            except inputs.read_errors() as e:
                where = path if isinstance(path, str) else path[0]
                damaged.add([(where, inputs.damage_reason(e), str(e) or type(e).__name__)])
                continue
            yield from counts.items()

    return spark.createDataFrame(sc.parallelize(files, len(files)).mapPartitions(task), schema), damaged


def stop_if_damaged(damaged, what: str) -> None:
    """After an action: stop naming the first file a task could not read (a partial input skews every count)."""
    for f, reason, detail in damaged.value[:1]:
        raise inputs.InputFileError(f, reason, f"damaged file ({detail}); download it again", what)


def wikipedia_gram_rows(spark, path: str):
    """(DataFrame[gram, n] of per-task counts, damaged-files accumulator or None, info) for ``queries.wikipedia``."""
    from pyspark.sql import functions as F

    kind, files, index = wikipedia_files(path)
    info = {"format": kind, "files": len(files), "index_files": len(index)}
    if kind == "xml":
        units = read_units(files, index)
        log.info(f"queries: {len(files)} dump file(s) in {len(units)} task(s)"
                 + (f" ({len(index)} multistream index file(s) used to split them)" if index else ""))
        return (*per_file_counts(spark, units, dump_file_counts, "gram string, n long"), {**info, "tasks": len(units)})
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
        if damaged:
            stop_if_damaged(damaged, "queries.wikipedia")
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
        if problem := inputs.text_problem(p, decompress=True):
            raise inputs.InputFileError(p, *problem, "queries.pageviews file")
    counts, damaged = per_file_counts(spark, list(paths), pageview_file_counts, "title string, views long")
    rows = (counts.groupBy("title").agg(F.sum("views").alias("views"))
            .where(F.col("views") >= cfg.min_title_views)
            .orderBy(F.desc("views"), F.asc("title")).limit(cfg.budget)).collect()
    stop_if_damaged(damaged, "queries.pageviews file")
    return [(r.title, r.views) for r in rows]
