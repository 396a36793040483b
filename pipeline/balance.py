"""`wit balance`: query balancing (CLIP's "up to 20,000 pairs per query", MetaCLIP's rule).

Count over the whole matched pool how many texts match each entry; p(entry) = t / max(count, t); a
text is kept when any of its entries fires, so P(keep) = 1 − Π(1 − p), stored as ``keep_prob``.
Entry e fires for text uid when ``pipeline.ids.hash_to_unit(uid, e, seed) < p(e)`` — blake2b-64 of
``"{uid}\\x1f{e}\\x1f{seed}"`` divided by 2^64 — so a run is reproducible and another seed draws
another sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline import log, storage
from pipeline.errors import UserError
from pipeline.ids import hash_to_unit
from pipeline.queries import load_query_list, queries_path
from pipeline.spark import nullable, read_dataset
from pipeline.stage import Flag, StageContext, stage

ENTRY_COUNTS = "_entry_counts.parquet"  # per-entry (entry_id, entry, count, p, kept) beside balanced/ output


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


@stage("balance", order=60, input="matched", output="balanced",
       help="cap each query at about t texts (MetaCLIP balancing)",
       description="Count the texts matching each entry over the whole matched pool; keep a text when any of "
       "its entries fires with p = t / max(count, t) (draws: hash of uid, entry id, seed). Input: "
       "<output_dir>/matched. Output: <output_dir>/balanced (+ keep_prob), _stats.json, _entry_counts.parquet.",
       input_help="input dataset (default: <output_dir>/matched)", output_help="output folder (default: <output_dir>/balanced)",
       options=[Flag("--t", key="balance.t", group="t", metavar="N", type=int,
                     help="texts per entry kept on average (config balance.t, default 20000)"),
                Flag("--tail-share", key="balance.tail_share", group="t", metavar="X", type=float,
                     help="derive t so entries with count < t hold this share of all matches (MetaCLIP: 0.06)"),
                Flag("--seed", key="balance.seed", metavar="N", type=int)])
def run_balance(ctx: StageContext) -> None:
    """Query balancing (matched/ → balanced/ with keep_prob).

    Also writes ``balanced/_entry_counts.parquet`` (entry_id, entry, count, p, kept) for the report;
    Spark, pyarrow.dataset and DuckDB's ``part-*.parquet`` glob ignore it.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F
    from pyspark.storagelevel import StorageLevel

    from schemas import BALANCED, MATCHED, to_spark, validate_spark

    cfg, spark, stats = ctx.cfg, ctx.spark, ctx.stats
    bc_cfg = cfg.balance
    df = read_dataset(spark, ctx.input, MATCHED, "balance input")

    # 1. texts per entry over the whole pool (a Spark aggregation; only the ≤ list-size table comes back)
    counted = df.select(F.explode("entry_ids").alias("entry_id")).groupBy("entry_id").count().toArrow()
    ids = counted.column("entry_id").to_numpy().astype(np.int64)
    cnt = counted.column("count").to_numpy().astype(np.int64)
    n_entries = _list_size(cfg, ctx.input, ids)
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
    decided = df.mapInArrow(_balance_task(bcast, bc_cfg.seed, extended), nullable(to_spark(extended)))
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
        result_df.write.parquet(storage.to_spark_path(ctx.tmp))
        n_out = int(tot["kept"] or 0)
        entries = _entries_or_none(cfg, n_entries)
        table = pa.table({
            "entry_id": pa.array(np.arange(n_entries), pa.int32()),
            "entry": pa.array(entries if entries is not None else [None] * n_entries, pa.string()),
            "count": pa.array(counts, pa.int64()), "p": pa.array(p, pa.float64()),
            "kept": pa.array(kept_counts, pa.int64()),
        })
        fs, tp = storage.fs_for(ctx.tmp)
        with fs.open(f"{tp}/{ENTRY_COUNTS}", "wb") as f:
            pq.write_table(table, f)
        stats.input_rows = int(tot["n"])
        stats.output_rows = n_out
        no_entries = int(tot["empty"] or 0)
        stats.drop("no_query_match", no_entries)
        stats.drop("balanced_out", stats.input_rows - n_out - no_entries)
        stats.extra = {
            "t": int(t), "t_rule": t_rule, "seed": bc_cfg.seed, "entries": n_entries,
            "entries_matched": int((counts > 0).sum()), "entries_never_matched": int((counts == 0).sum()),
            "entries_capped": int((counts > t).sum()),
            "tail_share": round(float(counts[counts < t].sum() / max(counts.sum(), 1)), 6),
            "expected_size": round(float(tot["expected"] or 0.0), 3), "actual_size": n_out,
            "before": _summary(counts, _top(counts, counts, kept_counts, entries)),
            "after": _summary(kept_counts, _top(kept_counts, counts, kept_counts, entries)),
            "entry_counts": f"{ctx.output}/{ENTRY_COUNTS}",
        }
    finally:
        decided.unpersist()
        bcast.unpersist()
    log.info(f"balance: kept {n_out} of {stats.input_rows} (expected {stats.extra['expected_size']:.0f})")


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
