"""Substring matching against the query list (`wit match`) and query balancing (`wit balance`).

Matching follows MetaCLIP's ``substr_matching`` exactly: the text is padded with spaces, each of
``, . ; : ? ! ` `` gets spaces around it and tab/CR/LF become spaces; entry ``e`` matches when
``" " + e + " "`` occurs in that text. So matching is case-sensitive and on whole tokens, each entry
is reported once per text, and overlapping entries are all reported ("New York" → New York, New,
York). One Aho-Corasick automaton (pyahocorasick) over all padded entries does this in a single
pass per text; on Spark it is built once per Python worker from a broadcast list and cached.

Balancing (CLIP's "up to 20,000 pairs per query", MetaCLIP's rule): count over the whole matched
pool how many texts match each entry; p(entry) = t / max(count, t); a text is kept when any of its
entries fires, so P(keep) = 1 − Π(1 − p), stored as ``keep_prob``. Entry e fires for text uid when
``pipeline.ids.hash_to_unit(uid, e, seed) < p(e)`` — blake2b-64 of ``"{uid}\\x1f{e}\\x1f{seed}"``
divided by 2^64 — so a run is reproducible and another seed draws another sample.
"""

from __future__ import annotations

import hashlib
import threading
from operator import itemgetter
from typing import Any

import numpy as np

from pipeline import log, storage
from pipeline.errors import UserError
from pipeline.ids import hash_to_unit
from pipeline.queries import load_query_list, queries_path, spacing

ENTRY_COUNTS = "_entry_counts.parquet"  # per-entry (entry_id, entry, count, p, kept) beside balanced/ output


# --------------------------------------------------------------------------- matching
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


def read_parquet(spark, path: str):
    """A Parquet dataset folder or file; _stats.json and other non-Parquet files beside the data are skipped."""
    return spark.read.option("pathGlobFilter", "*.parquet").parquet(storage.to_spark_path(path))


def _nullable(struct):
    """A Spark schema with every field nullable: a null from a Python worker must never crash the JVM."""
    from pyspark.sql.types import StructField, StructType

    return StructType([StructField(f.name, f.dataType, True, f.metadata) for f in struct.fields])


def read_dataset(spark, path: str, schema, what: str):
    """A parquet dataset as ``schema``'s columns: missing nullable ones become null, types cast.

    Candidates/URL-list data is accepted too: a missing uid is computed later from (url, text),
    a missing text_source is "caption", a missing source_file is the file the row came from.
    """
    from pyspark.sql import functions as F

    from schemas import to_spark

    storage.require_exists(path, what)
    df = read_parquet(spark, path)
    have = set(df.columns)
    for req in ("url", "text"):
        if req not in have:
            raise UserError(f"{what} {path} has no {req!r} column (columns: {', '.join(df.columns)})")
    fill = {"text_source": F.lit("caption"), "source_file": F.input_file_name()}
    cols = []
    for f in to_spark(schema).fields:
        if f.name in have:
            cols.append(F.col(f.name).cast(f.dataType).alias(f.name))
        else:
            cols.append(fill.get(f.name, F.lit(None)).cast(f.dataType).alias(f.name))
    return df.select(*cols)


def run_match(cfg, spark=None, input: str | None = None, output: str | None = None,
              overwrite: bool = False) -> dict[str, Any]:
    """Keep texts that contain a query (filtered/ → matched/ with entry_ids); returns the stats.

    Dropped: ``no_text`` (missing/blank text), ``no_query_match`` (no entry occurs in the text).
    """
    from pyspark.sql import functions as F

    from pipeline.spark import get_spark
    from pipeline.stats import StageStats, read_stats
    from schemas import FILTERED, MATCHED, to_spark, validate_spark

    inp = (input or cfg.path("filtered")).rstrip("/")
    out = (output or cfg.path("matched")).rstrip("/")
    if storage.is_complete(out) and not overwrite:
        log.info(f"match: {out} is complete, skipping (use --overwrite to redo)")
        return read_stats(out) or {}
    qpath = queries_path(cfg)
    entries = load_query_list(qpath)
    digest = list_digest(entries)
    spark = spark or get_spark(cfg.spark)
    stats = StageStats("match")
    df = read_dataset(spark, inp, FILTERED, "match input")
    bc = spark.sparkContext.broadcast(entries)
    try:
        has_text = df.where(F.col("text").isNotNull() & (F.trim("text") != ""))
        matched = has_text.mapInArrow(_match_task(digest, bc, MATCHED), _nullable(to_spark(MATCHED)))
        kept = matched.where(F.size("entry_ids") > 0)
        validate_spark(kept, MATCHED)
        with storage.atomic_path(out) as tmp:
            log.info(f"match: {inp} against {len(entries)} entries ({qpath}) → {out}")
            kept.write.parquet(storage.to_spark_path(tmp))
            res = read_parquet(spark, tmp)
            agg = res.agg(F.count(F.lit(1)).alias("n"), F.sum(F.size("entry_ids")).alias("m")).first()
            stats.input_rows = df.count()
            stats.output_rows = int(agg["n"])
            no_text = df.where(F.col("text").isNull() | (F.trim("text") == "")).count()
            _drop(stats, "no_text", no_text)
            _drop(stats, "no_query_match", stats.input_rows - stats.output_rows - no_text)
            stats.extra = {"queries": qpath, "entries": len(entries), "list_digest": digest,
                           "matches": int(agg["m"] or 0),
                           "mean_entries_per_text": round((agg["m"] or 0) / max(stats.output_rows, 1), 3)}
            result = stats.write(tmp)
    finally:
        bc.unpersist()
    storage.mark_complete(out)
    return result


# --------------------------------------------------------------------------- balancing
def entry_probabilities(counts: np.ndarray, t: float) -> np.ndarray:
    """p = t / max(count, t) per entry: entries matched by at most t texts keep all of them."""
    counts = np.asarray(counts, dtype=np.float64)
    return t / np.maximum(counts, t)


def t_from_tail_share(counts: np.ndarray, share: float) -> int:
    """The t at which the tail holds ``share`` of all matches (MetaCLIP: ~6%).

    With the counts sorted ascending, t is the count at which the running sum first reaches
    ``share`` of the total: entries with count < t hold less than ``share``, those with count ≤ t
    at least ``share``.
    """
    c = np.sort(np.asarray(counts, dtype=np.int64)[np.asarray(counts) > 0])
    if c.size == 0:
        raise UserError("balance: no matches to derive t from (the matched pool is empty)")
    cum = np.cumsum(c)
    k = int(np.searchsorted(cum, share * cum[-1], side="left"))
    return max(int(c[min(k, c.size - 1)]), 1)


def keep_decisions(uids: list[str], entry_ids: list[list[int] | None], p,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, keep_prob) per text: keep when some entry fires (hash draw < p), keep_prob = 1 − Π(1 − p).

    ``p`` (array or list) is indexed by entry id. A text with an entry of p = 1 is kept without
    drawing (that draw always fires), so the result equals drawing every entry.
    """
    pl = p.tolist() if isinstance(p, np.ndarray) else p
    n = len(uids)
    keep = np.zeros(n, dtype=bool)
    keep_prob = np.zeros(n, dtype=np.float64)
    for i, (uid, ids) in enumerate(zip(uids, entry_ids)):
        if not ids:
            continue
        ps = [pl[e] for e in ids]
        q = 1.0
        for pe in ps:
            q *= 1.0 - pe
        keep_prob[i] = 1.0 - q
        if max(ps) >= 1.0:
            keep[i] = True
            continue
        for e, pe in zip(ids, ps):
            if hash_to_unit(uid, e, seed) < pe:
                keep[i] = True
                break
    return keep, keep_prob


def _balance_task(broadcast, seed: int, schema):
    """mapInArrow function: every row with keep_prob and a ``keep`` flag."""

    def task(batches):
        import pyarrow as pa

        p = broadcast.value.tolist()
        for batch in batches:
            keep, prob = keep_decisions(batch.column("uid").to_pylist(), batch.column("entry_ids").to_pylist(), p, seed)
            cols = [batch.column(i) for i in range(batch.num_columns)]
            yield pa.RecordBatch.from_arrays(cols + [pa.array(prob), pa.array(keep)], schema=schema)

    return task


def _drop(stats, reason: str, n: int) -> None:
    if n:
        stats.drop(reason, n)


def _top(by: np.ndarray, counts: np.ndarray, kept: np.ndarray, entries: list[str] | None, k: int = 20) -> list[dict]:
    """The k entries with the largest ``by`` (ties: lower id first), with their counts before and after."""
    order = np.lexsort((np.arange(by.size), -by))[:k]
    return [{"entry_id": int(i), "entry": entries[i] if entries else None, "count": int(counts[i]),
             "kept": int(kept[i])} for i in order if by[i] > 0]


def _summary(counts: np.ndarray, top: list[dict]) -> dict[str, Any]:
    c = counts[counts > 0]
    if c.size == 0:
        return {"entries": 0, "matches": 0}
    q = np.quantile(c, [0.5, 0.9, 0.99])
    return {"entries": int(c.size), "matches": int(c.sum()), "max": int(c.max()), "mean": round(float(c.mean()), 3),
            "p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "top": top}


def run_balance(cfg, spark=None, input: str | None = None, output: str | None = None,
                overwrite: bool = False) -> dict[str, Any]:
    """Query balancing (matched/ → balanced/ with keep_prob); returns the stats.

    Also writes ``balanced/_entry_counts.parquet`` (entry_id, entry, count, p, kept) for the report;
    Spark, pyarrow.dataset and DuckDB's ``part-*.parquet`` glob ignore it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F
    from pyspark.storagelevel import StorageLevel

    from pipeline.spark import get_spark
    from pipeline.stats import StageStats, read_stats
    from schemas import BALANCED, MATCHED, to_spark, validate_spark

    bc_cfg = cfg.balance
    inp = (input or cfg.path("matched")).rstrip("/")
    out = (output or cfg.path("balanced")).rstrip("/")
    if storage.is_complete(out) and not overwrite:
        log.info(f"balance: {out} is complete, skipping (use --overwrite to redo)")
        return read_stats(out) or {}
    spark = spark or get_spark(cfg.spark)
    stats = StageStats("balance")
    df = read_dataset(spark, inp, MATCHED, "balance input")

    # 1. texts per entry over the whole pool (a Spark aggregation; only the ≤ list-size table comes back)
    counted = df.select(F.explode("entry_ids").alias("entry_id")).groupBy("entry_id").count().toArrow()
    ids = counted.column("entry_id").to_numpy().astype(np.int64)
    cnt = counted.column("count").to_numpy().astype(np.int64)
    n_entries = _list_size(cfg, inp, ids)
    counts = np.zeros(n_entries, dtype=np.int64)
    counts[ids] = cnt
    if bc_cfg.tail_share is not None:
        t, t_rule = t_from_tail_share(counts, bc_cfg.tail_share), f"tail_share={bc_cfg.tail_share}"
    else:
        t, t_rule = bc_cfg.t, "given"
    p = entry_probabilities(counts, t)
    log.info(f"balance: t={t} ({t_rule}); {int((counts > t).sum())} of {int((counts > 0).sum())} matched entries capped")

    # 2. the draws: every row once, in Python workers, against the broadcast p table
    extended = pa.schema(list(BALANCED) + [pa.field("keep", pa.bool_(), False)])
    bcast = spark.sparkContext.broadcast(p)
    decided = df.mapInArrow(_balance_task(bcast, bc_cfg.seed, extended), _nullable(to_spark(extended)))
    decided.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        tot = decided.agg(F.count(F.lit(1)).alias("n"), F.sum("keep_prob").alias("expected"),
                          F.sum(F.col("keep").cast("long")).alias("kept"),
                          F.sum((F.coalesce(F.size("entry_ids"), F.lit(0)) <= 0).cast("long")).alias("empty")).first()
        kept_counts = np.zeros(n_entries, dtype=np.int64)
        kc = (decided.where("keep").select(F.explode("entry_ids").alias("entry_id")).groupBy("entry_id").count()
              .toArrow())
        kept_counts[kc.column("entry_id").to_numpy().astype(np.int64)] = kc.column("count").to_numpy()
        result_df = decided.where("keep").drop("keep")
        validate_spark(result_df, BALANCED)
        with storage.atomic_path(out) as tmp:
            result_df.write.parquet(storage.to_spark_path(tmp))
            n_out = int(tot["kept"] or 0)
            entries = _entries_or_none(cfg, n_entries)
            table = pa.table({
                "entry_id": pa.array(np.arange(n_entries), pa.int32()),
                "entry": pa.array(entries if entries is not None else [None] * n_entries, pa.string()),
                "count": pa.array(counts, pa.int64()), "p": pa.array(p, pa.float64()),
                "kept": pa.array(kept_counts, pa.int64()),
            })
            fs, tp = storage.fs_for(tmp)
            with fs.open(f"{tp}/{ENTRY_COUNTS}", "wb") as f:
                pq.write_table(table, f)
            stats.input_rows = int(tot["n"])
            stats.output_rows = n_out
            no_entries = int(tot["empty"] or 0)
            _drop(stats, "no_query_match", no_entries)
            _drop(stats, "balanced_out", stats.input_rows - n_out - no_entries)
            stats.extra = {
                "t": int(t), "t_rule": t_rule, "seed": bc_cfg.seed, "entries": n_entries,
                "entries_matched": int((counts > 0).sum()), "entries_never_matched": int((counts == 0).sum()),
                "entries_capped": int((counts > t).sum()),
                "tail_share": round(float(counts[counts < t].sum() / max(counts.sum(), 1)), 6),
                "expected_size": round(float(tot["expected"] or 0.0), 3), "actual_size": n_out,
                "before": _summary(counts, _top(counts, counts, kept_counts, entries)),
                "after": _summary(kept_counts, _top(kept_counts, counts, kept_counts, entries)),
                "entry_counts": f"{out}/{ENTRY_COUNTS}",
            }
            result = stats.write(tmp)
    finally:
        decided.unpersist()
        bcast.unpersist()
    storage.mark_complete(out)
    log.info(f"balance: kept {n_out} of {stats.input_rows} (expected {stats.extra['expected_size']:.0f})")
    return result


def _list_size(cfg, inp: str, seen_ids: np.ndarray) -> int:
    """Entries in the list the input was matched against (from match's stats), at least max id + 1."""
    from pipeline.stats import read_stats

    n = 0
    try:
        n = int(((read_stats(inp) or {}).get("extra") or {}).get("entries") or 0)
    except (OSError, ValueError):
        n = 0
    if not n:
        try:
            n = len(load_query_list(queries_path(cfg)))
        except UserError:
            n = 0
    return max(n, int(seen_ids.max()) + 1 if seen_ids.size else 0)


def _entries_or_none(cfg, n: int) -> list[str] | None:
    try:
        entries = load_query_list(queries_path(cfg))
    except UserError:
        return None
    return entries + [None] * (n - len(entries)) if len(entries) <= n else None


# --------------------------------------------------------------------------- CLI
def register(sub, common) -> None:
    from pipeline.cli import flag

    m = sub.add_parser(
        "match", parents=[common], help="keep texts containing a query; add their entry ids",
        description="Substring-match every caption against the query list (MetaCLIP semantics: whole tokens, "
        "case-sensitive, punctuation space-wrapped, overlapping entries all reported). Input: "
        "<output_dir>/filtered (or any candidates-like parquet); list: queries.path or <output_dir>/queries. "
        "Output: <output_dir>/matched (filtered columns + entry_ids) with _stats.json; unmatched texts are "
        "counted as no_query_match.",
    )
    m.add_argument("--input", help="input dataset (default: <output_dir>/filtered)")
    m.add_argument("--output", help="output folder (default: <output_dir>/matched)")
    flag(m, "--queries", key="queries.path", metavar="PATH", help="query list: folder, queries.parquet, metadata.json or .txt")
    m.add_argument("--overwrite", action="store_true", help="redo a complete output")
    m.set_defaults(func=_cli_match)

    b = sub.add_parser(
        "balance", parents=[common], help="cap each query at about t texts (MetaCLIP balancing)",
        description="Count the texts matching each entry over the whole matched pool; keep a text when any of "
        "its entries fires with p = t / max(count, t) (draws: hash of uid, entry id, seed). Input: "
        "<output_dir>/matched. Output: <output_dir>/balanced (+ keep_prob), _stats.json, _entry_counts.parquet.",
    )
    b.add_argument("--input", help="input dataset (default: <output_dir>/matched)")
    b.add_argument("--output", help="output folder (default: <output_dir>/balanced)")
    g = b.add_mutually_exclusive_group()
    flag(g, "--t", key="balance.t", metavar="N", type=int, help="texts per entry kept on average (config balance.t, default 20000)")
    flag(g, "--tail-share", key="balance.tail_share", metavar="X", type=float,
         help="derive t so entries with count < t hold this share of all matches (MetaCLIP: 0.06)")
    flag(b, "--seed", key="balance.seed", metavar="N", type=int)
    b.add_argument("--overwrite", action="store_true", help="redo a complete output")
    b.set_defaults(func=_cli_balance)


def _cli_match(args, cfg) -> int:
    from pipeline.stats import summary_line

    print(summary_line(run_match(cfg, input=args.input, output=args.output, overwrite=args.overwrite)))
    return 0


def _cli_balance(args, cfg) -> int:
    from pipeline.stats import summary_line

    print(summary_line(run_balance(cfg, input=args.input, output=args.output, overwrite=args.overwrite)))
    return 0
