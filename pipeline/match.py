"""`wit match`: keep the texts that contain a query, with the ids of the entries they contain.

Matching follows MetaCLIP's ``substr_matching`` exactly: the text is padded with spaces, each of
``, . ; : ? ! ` `` gets spaces around it and tab/CR/LF become spaces; entry ``e`` matches when
``" " + e + " "`` occurs in that text. So matching is case-sensitive and on whole tokens, each entry
is reported once per text, and overlapping entries are all reported ("New York" → New York, New,
York). One Aho-Corasick automaton (pyahocorasick) over all padded entries does this in a single
pass per text; on Spark it is built once per Python worker from a broadcast list and cached.
"""

from __future__ import annotations

import hashlib
import threading
from operator import itemgetter
from typing import Any

from pipeline import log, storage
from pipeline.queries import load_query_list, queries_path
from pipeline.query_text import spacing
from pipeline.spark import nullable, read_dataset, read_parquet
from pipeline.stage import Flag, StageContext, stage


class Matcher:
    """``Matcher(entries).match(text)`` → ascending ids of the entries the text contains (MetaCLIP rules)."""

    def __init__(self, entries: list[str]):
        import ahocorasick

        self.n_entries = len(entries)
        self._automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        self._dups: dict[int, list[int]] = {}  # a list with a repeated entry reports every copy's id
        for i, e in enumerate(entries):
            key = f" {e} "
            first = self._automaton.get(key, -1)
            if first >= 0:
                self._dups.setdefault(first, [first]).append(i)
            else:
                self._automaton.add_word(key, i)
        if len(self._automaton):
            self._automaton.make_automaton()

    @classmethod
    def from_path(cls, path: str) -> Matcher:
        return cls(load_query_list(path))

    def match(self, text: str) -> list[int]:
        return self.match_many([text])[0] or []

    def match_many(self, texts: list[str | None]) -> list[list[int] | None]:
        """``match`` for each text; ``None`` for a missing text. The hot loop of `wit match`."""
        if not len(self._automaton):
            return [None if t is None else [] for t in texts]
        find, second, dups = self._automaton.iter, itemgetter(1), self._dups
        out: list[list[int] | None] = []
        for t in texts:
            if not t:
                out.append(None if t is None else [])
                continue
            ids = set(map(second, find(spacing(t))))
            if dups:
                ids = {j for i in ids for j in dups.get(i, (i,))}
            out.append(sorted(ids))
        return out


def list_digest(entries: list[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for e in entries:
        h.update(e.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()


_MATCHERS: dict[str, Matcher] = {}  # per Python worker: list digest → automaton, built once
_LOCK = threading.Lock()


def cached_matcher(digest: str, broadcast) -> Matcher:
    """The worker's Matcher for a broadcast list, built on first use (not per task or batch)."""
    m = _MATCHERS.get(digest)
    if m is None:
        with _LOCK:
            m = _MATCHERS.get(digest)
            if m is None:
                _MATCHERS.clear()  # one list at a time keeps worker memory bounded
                m = _MATCHERS[digest] = Matcher(broadcast.value)
    return m


def _match_task(digest: str, broadcast, schema):
    """mapInArrow function: add entry_ids (null for a missing text, [] when nothing matches) and uids."""

    def task(batches):
        import pyarrow as pa

        from pipeline.ids import make_uid

        matcher = cached_matcher(digest, broadcast)
        for batch in batches:
            texts = batch.column("text").to_pylist()
            cols = {name: batch.column(name) for name in batch.schema.names}
            if batch.column("uid").null_count:
                urls = batch.column("url").to_pylist()
                cols["uid"] = pa.array([u if u is not None else make_uid(url or "", t or "")
                                        for u, url, t in zip(batch.column("uid").to_pylist(), urls, texts)], pa.string())
            cols["entry_ids"] = pa.array(matcher.match_many(texts), pa.list_(pa.int32()))
            yield pa.RecordBatch.from_arrays([cols[f.name] for f in schema], schema=schema)

    return task


@stage("match", order=50, input="filtered", output="matched",
       help="keep texts containing a query; add their entry ids",
       description="Substring-match every caption against the query list (MetaCLIP semantics: whole tokens, "
       "case-sensitive, punctuation space-wrapped, overlapping entries all reported). Input: "
       "<output_dir>/filtered (or any candidates-like parquet); list: queries.path or <output_dir>/queries. "
       "Output: <output_dir>/matched (filtered columns + entry_ids) with _stats.json; unmatched texts are "
       "counted as no_query_match.",
       input_help="input dataset (default: <output_dir>/filtered)", output_help="output folder (default: <output_dir>/matched)",
       options=[Flag("--queries", key="queries.path", metavar="PATH",
                     help="query list: folder, queries.parquet, metadata.json or .txt")])
def run_match(ctx: StageContext) -> dict[str, Any] | None:
    """Keep texts that contain a query (filtered/ → matched/ with entry_ids).

    Dropped: ``no_text`` (missing/blank text), ``no_query_match`` (no entry occurs in the text).
    """
    from pyspark.sql import functions as F

    from schemas import FILTERED, MATCHED, to_spark, validate_spark

    qpath = queries_path(ctx.cfg)
    entries = load_query_list(qpath)
    digest = list_digest(entries)
    spark, stats = ctx.spark, ctx.stats
    df = read_dataset(spark, ctx.input, FILTERED, "match input")
    bc = spark.sparkContext.broadcast(entries)
    try:
        has_text = df.where(F.col("text").isNotNull() & (F.trim("text") != ""))
        matched = has_text.mapInArrow(_match_task(digest, bc, MATCHED), nullable(to_spark(MATCHED)))
        kept = matched.where(F.size("entry_ids") > 0)
        validate_spark(kept, MATCHED)
        log.info(f"match: {ctx.input} against {len(entries)} entries ({qpath}) → {ctx.output}")
        kept.write.parquet(storage.to_spark_path(ctx.tmp))
        agg = read_parquet(spark, ctx.tmp).agg(F.count(F.lit(1)).alias("n"), F.sum(F.size("entry_ids")).alias("m")).first()
        stats.input_rows = df.count()
        stats.output_rows = int(agg["n"])
        no_text = df.where(F.col("text").isNull() | (F.trim("text") == "")).count()
        stats.drop("no_text", no_text)
        stats.drop("no_query_match", stats.input_rows - stats.output_rows - no_text)
        stats.extra = {"queries": qpath, "entries": len(entries), "list_digest": digest,
                       "matches": int(agg["m"] or 0),
                       "mean_entries_per_text": round((agg["m"] or 0) / max(stats.output_rows, 1), 3)}
    finally:
        bc.unpersist()
    return None
