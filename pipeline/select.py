"""`wit select`: keep the best-scored pairs and write the final training shards.

Joins the download metadata (shards/NNNNN.parquet) with the scores (scores/NNNNN.parquet) in
Spark and drops, in this order, each row under the first reason that applies:
``not_downloaded`` (status != success), ``score_error`` (no CLIP score), ``too_small`` (shorter
original side < select.min_side), ``bad_aspect_ratio`` (long/short side > select.max_aspect_ratio),
``duplicate_image`` (same sha256 as a better-scored kept image), ``low_clip_score``.

The CLIP cut is ``clip_score >= select.threshold`` when a threshold is set, else the global top
``select.top_fraction`` of the scored pool (DataComp's rule: the quantile is taken over every
scored pair, before the image rules). The quantile is Spark's ``percentile_approx`` at accuracy
1e6 (rank error <= n/1e6: exact below a million rows); a row is kept when its score is above the
(1 - f) quantile, so ties at the cut are dropped together.

Kept samples are re-sharded into ``final/NNNNN.tar`` (key.jpg|png|webp, key.txt, key.json) of
select.shard_size samples, ordered by a hash of (uid, seed) so every final shard mixes all
download shards, with ``manifest.parquet`` (schemas.MANIFEST), ``sizes.json`` ({"NNNNN.tar": n},
what open_clip's webdataset loader reads), ``_stats.json`` and ``_SUCCESS``. The whole folder is
written under a temporary name and renamed, so a rerun skips a complete output.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import schemas
from pipeline import log, storage
from pipeline.cli import flag
from pipeline.config import RunConfig
from pipeline.errors import UserError
from pipeline.stats import StageStats, read_stats

QUANTILE_ACCURACY = 1_000_000
REASONS = ["not_downloaded", "score_error", "too_small", "bad_aspect_ratio", "duplicate_image", "low_clip_score"]


def key_digits(shard_size: int) -> int:
    """Digits of the in-shard index in a key (img2dataset style: at least 4)."""
    return max(4, len(str(shard_size - 1)))


def _read_source_tar(shards_dir: str, item) -> list:
    """Spark: one download shard → (final shard, (index, final key, {ext: bytes})) for kept samples."""
    from pipeline.shards import iter_tar, sample_json

    source_shard, kept = item
    want = {r[0]: r for r in kept}  # source_key -> (source_key, idx, final_shard, final_key, clip_score)
    fs, p = storage.fs_for(f"{shards_dir.rstrip('/')}/{source_shard:05d}.tar")
    out = []
    with fs.open(p, "rb") as f:
        for _, key, sample in iter_tar(f):
            if key not in want:
                continue
            _, idx, final_shard, final_key, score = want[key]
            meta = sample_json(sample)
            meta.update({"key": final_key, "shard": final_shard, "source_key": key, "source_shard": source_shard,
                         "clip_score": score})
            members = {e: b for e, b in sample.items() if e != "json"}
            members["json"] = json.dumps(meta, sort_keys=True).encode()
            out.append((final_shard, (idx, final_key, members)))
    return out


def _write_final_tars(out_dir: str, part: int, items) -> list:
    """Spark: write one final shard (partition i = shard i), samples in index order."""
    rows = sorted(items, key=lambda kv: kv[1][0])
    if not rows:
        return []
    name = f"{part:05d}.tar"
    fs, p = storage.fs_for(f"{out_dir.rstrip('/')}/{name}")
    with fs.open(p, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for _, (_, key, members) in rows:
            for ext in sorted(members, key=lambda e: (e == "json", e == "txt", e)):  # image, txt, json
                data = members[ext]
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
                tf.addfile(ti, io.BytesIO(data))
    return [(name, len(rows))]


def run_select(
    cfg: RunConfig, spark=None, shards_dir: str | None = None, scores_dir: str | None = None,
    out_dir: str | None = None, overwrite: bool = False,
) -> dict[str, Any]:
    """Select and re-shard; returns the stats (also written to ``out_dir/_stats.json``)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
    from pyspark.sql.window import Window

    sel = cfg.select
    shards_dir = shards_dir or cfg.path("shards")
    scores_dir = scores_dir or cfg.path("scores")
    out_dir = out_dir or cfg.path("final")
    if storage.is_complete(out_dir) and not overwrite:
        log.info(f"select: {out_dir} is complete; skipping (use --overwrite to redo)")
        return read_stats(out_dir) or {}
    storage.require_exists(shards_dir, "download shards")
    storage.require_exists(scores_dir, "scores (run `wit score` first)")
    if spark is None:
        from pipeline.spark import get_spark

        spark = get_spark(cfg.spark)
    stats = StageStats("select")

    meta = spark.read.schema(schemas.to_spark(schemas.SHARD_METADATA)).parquet(storage.to_spark_path(shards_dir) + "/*.parquet")
    scores = (
        spark.read.schema(schemas.to_spark(schemas.SCORES)).parquet(storage.to_spark_path(scores_dir) + "/*.parquet")
        .select("key", "clip_score", "score_error")
    )
    df = meta.join(scores, "key", "left")
    w = F.coalesce("original_width", "width")
    h = F.coalesce("original_height", "height")
    short, long_ = F.least(w, h), F.greatest(w, h)
    rule = (
        F.when(F.col("status") != "success", "not_downloaded")
        .when(F.col("clip_score").isNull() | F.isnan("clip_score"), "score_error")
        .when(F.lit(sel.min_side > 0) & (short.isNull() | (short < sel.min_side)), "too_small")
        .when(short.isNotNull() & ((short <= 0) | (long_ / short > sel.max_aspect_ratio)), "bad_aspect_ratio")
    )
    df = df.withColumn("reason", rule).cache()

    # The CLIP cut: a threshold, or the global top fraction of the whole scored pool.
    cutoff, inclusive = None, True
    if sel.threshold is not None:
        cutoff = float(sel.threshold)
    elif sel.top_fraction is not None and sel.top_fraction < 1.0:
        scored = df.where(F.col("reason").isNull() | F.col("reason").isin("too_small", "bad_aspect_ratio"))
        q = scored.agg(F.percentile_approx("clip_score", 1.0 - sel.top_fraction, QUANTILE_ACCURACY).alias("q")).first()["q"]
        cutoff, inclusive = (float(q), False) if q is not None else (None, True)

    # Exact image dedup among the rows still in: the best-scored copy stays (ties: smallest uid).
    ok = F.col("reason").isNull()
    if sel.dedup_images:
        rank = F.row_number().over(Window.partitionBy("sha256").orderBy(F.col("clip_score").desc(), "uid"))
        df = df.withColumn("_rank", F.when(ok & F.col("sha256").isNotNull(), rank))
        df = df.withColumn("reason", F.when(ok & (F.col("_rank") > 1), "duplicate_image").otherwise(F.col("reason")))
    if cutoff is not None:
        low = (F.col("clip_score") < cutoff) if inclusive else (F.col("clip_score") <= cutoff)
        df = df.withColumn("reason", F.when(F.col("reason").isNull() & low, "low_clip_score").otherwise(F.col("reason")))
    df = df.cache()
    counts = {r["reason"]: r["count"] for r in df.groupBy("reason").count().collect()}
    stats.input_rows = sum(counts.values())
    for reason, n in counts.items():
        if reason is not None:
            stats.drop(reason, n)
    n_kept = counts.get(None, 0)
    stats.output_rows = n_kept

    # Deterministic shuffle across shards: order by a hash of (uid, seed), then number the rows.
    kept = df.where(F.col("reason").isNull()).withColumn("_h", F.xxhash64("uid", F.lit(str(sel.seed))))
    size, digits = sel.shard_size, key_digits(sel.shard_size)
    indexed = kept.orderBy("_h", "uid").rdd.zipWithIndex().map(lambda ri: (*ri[0], ri[1]))
    schema = T.StructType(kept.schema.fields + [T.StructField("_idx", T.LongType(), False)])
    kept = spark.createDataFrame(indexed, schema)
    final_shard = (F.col("_idx") / size).cast("int")
    kept = kept.withColumn("_final_shard", final_shard).withColumn(
        "_final_key", F.concat(F.lpad(final_shard.cast("string"), 5, "0"), F.lpad((F.col("_idx") % size).cast("string"), digits, "0"))
    ).cache()
    n_final = -(-n_kept // size)

    with storage.atomic_path(out_dir) as tmp:
        fs, tp = storage.fs_for(tmp)
        fs.makedirs(tp, exist_ok=True)
        manifest = kept.orderBy("_idx").select(
            "uid", F.col("_final_key").alias("key"), F.concat(F.lpad(F.col("_final_shard").cast("string"), 5, "0"), F.lit(".tar")).alias("shard"),
            "url", "text", "clip_score", "keep_prob", "entry_ids", "lang", "width", "height", "sha256",
            F.col("key").alias("source_key"),
        )
        _write_single_parquet(manifest, f"{tmp}/manifest.parquet", spark)
        sizes: dict[str, int] = {}
        if n_kept:
            by_source = kept.select("shard", "key", "_idx", "_final_shard", "_final_key", "clip_score").rdd.map(
                lambda r: (r["shard"], (r["key"], r["_idx"], r["_final_shard"], r["_final_key"], r["clip_score"]))
            ).groupByKey()
            src = shards_dir
            written = (
                by_source.flatMap(lambda kv: _read_source_tar(src, (kv[0], list(kv[1]))))
                .partitionBy(n_final, lambda s: s)
                .mapPartitionsWithIndex(lambda i, it: _write_final_tars(tmp, i, it))
                .collect()
            )
            sizes = dict(sorted(written))
        if sum(sizes.values()) != n_kept:
            raise UserError(f"select: wrote {sum(sizes.values())} samples but selected {n_kept}: download shards changed?")
        storage.write_json(f"{tmp}/sizes.json", sizes)
        stats.extra = {
            "cutoff": cutoff, "cutoff_inclusive": inclusive, "threshold": sel.threshold,
            "top_fraction": None if sel.threshold is not None else sel.top_fraction,
            "quantile": f"percentile_approx(accuracy={QUANTILE_ACCURACY}) over all scored pairs",
            "final_shards": len(sizes), "shard_size": size, "seed": sel.seed,
        }
        d = stats.write(tmp)
    df.unpersist()
    kept.unpersist()
    storage.mark_complete(out_dir)
    return d


def _write_single_parquet(df, path: str, spark) -> None:
    """One parquet file (not a Spark folder) so every reader opens it as is.

    Spark writes the (ordered) rows in parallel; the part files, in partition order, are then
    concatenated into one file.
    """
    tmp = f"{path}.parts"
    df.write.mode("overwrite").parquet(storage.to_spark_path(tmp))
    fs, tp = storage.fs_for(tmp)
    parts = sorted(p for p in fs.ls(tp, detail=False) if p.rsplit("/", 1)[-1].startswith("part-") and p.endswith(".parquet"))
    _, dest = storage.fs_for(path)
    import pyarrow.parquet as pq

    # Streamed batch by batch, each conformed to the schema: driver memory stays flat in the pool size.
    with fs.open(dest, "wb") as f, pq.ParquetWriter(f, schemas.MANIFEST) as writer:
        if not parts:
            writer.write_table(schemas.MANIFEST.empty_table())
        for part in parts:
            with fs.open(part, "rb") as src:
                for batch in pq.ParquetFile(src).iter_batches(batch_size=65_536):
                    writer.write_table(schemas.conform(batch, schemas.MANIFEST))
    fs.rm(tp, recursive=True)


# --- CLI ------------------------------------------------------------------------------------------


def register(sub, common) -> None:
    p = sub.add_parser(
        "select", parents=[common], help="keep the best-scored pairs; write the final training shards",
        description="Join shards/*.parquet with scores/, drop by status, CLIP score (threshold or global "
        "top fraction), image size/aspect rules and duplicate images, and write final/NNNNN.tar + "
        "manifest.parquet + sizes.json + _stats.json (loadable by open_clip --dataset-type webdataset).",
    )
    flag(p, "--threshold", key="select.threshold", type=float, help="keep clip_score >= this (wins over --top-fraction)")
    flag(p, "--top-fraction", key="select.top_fraction", type=float, help="keep the global top fraction by clip_score")
    flag(p, "--min-side", key="select.min_side", type=int)
    flag(p, "--max-aspect-ratio", key="select.max_aspect_ratio", type=float)
    flag(p, "--shard-size", key="select.shard_size", type=int)
    flag(p, "--seed", key="select.seed", type=int)
    p.add_argument("--shards", help="download shards folder (default <output_dir>/shards)")
    p.add_argument("--scores", help="scores folder (default <output_dir>/scores)")
    p.add_argument("--output", help="final folder (default <output_dir>/final)")
    p.add_argument("--overwrite", action="store_true", help="redo a complete output")
    p.set_defaults(func=_cli)


def _cli(args, cfg: RunConfig) -> int:
    from pipeline.stats import summary_line

    d = run_select(cfg, shards_dir=args.shards, scores_dir=args.scores, out_dir=args.output, overwrite=args.overwrite)
    print(summary_line(d))
    return 0
