"""`wit select`: keep the best-scored pairs and write the final training shards.

Joins the download metadata (shards/NNNNN.parquet) with the scores (scores/NNNNN.parquet) in
Spark and drops, in this order, each row under the first reason that applies:
``not_downloaded`` (status != success), ``score_error`` (no CLIP score), ``blocklisted`` (its
sha256 in select.blocklist_hashes, or its pHash within select.near_dup_distance of one there), ``eval_overlap`` (a
near-duplicate of an image of an evaluation set in select.decontaminate), ``unsafe`` (unsafe_score
over select.max_unsafe_score), then the image filters (filters/image.py, listed in
filters/registry.py: ``too_small`` (shorter original side < select.min_side),
``bad_aspect_ratio`` (long/short side > select.max_aspect_ratio)), ``duplicate_image`` (same
sha256 as a better-scored kept image), ``near_duplicate`` (in a near-duplicate cluster whose
best-scored member stays: pHash candidates confirmed by copy detection, pipeline/near_dup.py and copy_detect.py), ``low_clip_score`` (the CLIP-score filter). The
filters run as `wit filter`'s chain does, on Arrow batches in the workers; the hash rules are
Spark joins over pHash bands, never all pairs.

The CLIP cut is ``clip_score >= select.threshold`` when a threshold is set. Else
``select.threshold_rule`` chooses it from the scores, over every scored pair before the image rules:
``top_fraction`` keeps the global top ``select.top_fraction`` (DataComp's rule; the quantile is
Spark's ``percentile_approx`` at accuracy 1e6, rank error <= n/1e6: exact below a million rows; a
row is kept when its score is above the (1 - f) quantile, so ties at the cut are dropped together);
``valley`` keeps ``clip_score >=`` the valley between the two modes of the score histogram (matching
captions score high, unrelated ones low: ``valley_cut``), the cut a user would read off the
histogram without ground truth, and falls back to top_fraction when there is no such valley.

Two parts: the plan (this module: ``tag_rows`` gives every row its ``drop_reason`` or none, and for
duplicate_image and near_duplicate the source key of the copy that stayed, ``duplicate_of``) and the
writer (pipeline/reshard.py: kept samples re-sharded into ``final/NNNNN.tar`` of select.shard_size
samples, ordered by a hash of (uid, seed), with ``manifest.parquet`` and ``sizes.json``). Besides
them the output has ``dropped.parquet`` (every dropped row with its reason: schemas.SELECT_DROPPED),
``_stats.json`` and ``_SUCCESS``. The whole folder is written under a temporary name and renamed
(pipeline.stage), so a rerun skips a complete output.
"""

from __future__ import annotations

import numpy as np

import schemas
from filters.chain import REASON  # the column the filters tag rows in
from pipeline import inputs, storage
from pipeline.copy_detect import CopyThresholds
from pipeline.reshard import reshard, write_single_parquet
from pipeline.shards import list_shards, name_of
from pipeline.stage import Flag, Option, StageContext, stage

QUANTILE_ACCURACY = 1_000_000
REASONS = ["not_downloaded", "score_error", "blocklisted", "eval_overlap", "unsafe", "too_small", "bad_aspect_ratio",
           "duplicate_image", "near_duplicate", "low_clip_score"]
DROPPED_FILE = "dropped.parquet"  # every dropped row with its reason (schemas.SELECT_DROPPED)
DUPLICATE_OF = "duplicate_of"
# The valley rule (valley_cut): histogram bins over the scores' range; the valley must be at most
# VALLEY_MAX_RATIO of the lower mode's height, with at least MIN_MODE_SHARE of the pairs on each side.
VALLEY_BINS = 100
VALLEY_MAX_RATIO = 0.9
MIN_MODE_SHARE = 0.05
MIN_VALLEY_SCORES = 50


def _apply_filters(df, filters: list):
    """Tag the rows still in with the first of ``filters`` that drops them (an Arrow pass in the
    Python workers, as `wit filter` runs its chain)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    from filters.chain import FilterChain, tag_with

    chain, schema = FilterChain(filters), df.schema
    arrow_schema = to_arrow_schema(schema)
    return df.mapInArrow(lambda batches: tag_with(chain, batches, arrow_schema), schema)


@stage("select", order=90, input="shards", output="final",
       help="keep the best-scored pairs; write the final training shards",
       description="Join the download shards' metadata (<output_dir>/shards/*.parquet) with scores/, drop by "
       "status, blocklisted image hashes, evaluation-set copies, the unsafe score, the image filters (size, aspect "
       "ratio), duplicate and near-duplicate images and the CLIP score (threshold or global top fraction), and "
       "write final/NNNNN.tar + manifest.parquet + sizes.json + dropped.parquet + _stats.json "
       "(loadable by open_clip --dataset-type webdataset).",
       input_help="download shards folder (default: <output_dir>/shards)",
       output_help="final folder (default: <output_dir>/final)",
       options=[Option("--scores", metavar="PATH", help="scores folder (default: <output_dir>/scores)"),
                Flag("--threshold", key="select.threshold", type=float, metavar="SCORE",
                     help="keep clip_score >= this (wins over --top-fraction)"),
                Flag("--threshold-rule", key="select.threshold_rule", choices=["top_fraction", "valley"],
                     help="without --threshold: keep the global --top-fraction (top_fraction), or keep clip_score >= "
                     "the valley between the two modes of the score histogram (valley; top_fraction when the "
                     "scores have one mode); the cut and why are in final/_stats.json"),
                Flag("--top-fraction", key="select.top_fraction", type=float, metavar="F",
                     help="keep the global top fraction by clip_score"),
                Flag("--min-side", key="select.min_side", type=int, metavar="PX",
                     help="drop images whose shorter side is smaller"),
                Flag("--max-aspect-ratio", key="select.max_aspect_ratio", type=float, metavar="RATIO",
                     help="drop images whose long side / short side is larger"),
                Flag("--near-dup-distance", key="select.near_dup_distance", type=int, metavar="BITS",
                     help="most pHash bits near-duplicate candidates differ in (also for --decontaminate and "
                     "--blocklist-hashes); copy detection then confirms them (select.copy_confirm)"),
                Flag("--no-near-dup", key="select.near_dup", action="store_const", const=False,
                     help="keep near-duplicate images (exact duplicates are still dropped)"),
                Flag("--decontaminate", key="select.decontaminate", action="append", metavar="PATH",
                     help="an evaluation set (folder of images or webdataset .tar shards) whose near-duplicates are "
                     "dropped (eval_overlap); repeatable"),
                Flag("--blocklist-hashes", key="select.blocklist_hashes", action="append", metavar="FILE",
                     help="a file of hashes, one a line: 16-hex pHashes (their near-duplicates are dropped too) or "
                     "64-hex sha256s (exact copies), reason blocklisted; repeatable"),
                Flag("--shard-size", key="select.shard_size", type=int, metavar="N", help="samples per final shard"),
                Flag("--seed", key="select.seed", type=int, metavar="N", help="seed of the order of the final samples")])
def run_select(ctx: StageContext, scores: str | None = None) -> None:
    """Select from the download shards (default shards/) and their ``scores`` (default scores/)
    and re-shard into the output (default final/): the plan tags every row (``tag_rows``), the
    writer (pipeline/reshard.py) writes the rows it keeps."""
    from pyspark.sql import functions as F

    sel, stats, tmp = ctx.cfg.select, ctx.stats, ctx.tmp
    shards_dir, scores_dir = ctx.input, (scores or ctx.cfg.path("scores")).rstrip("/")
    storage.require_exists(shards_dir, "download shards")
    storage.require_exists(scores_dir, "scores (run `wit score` first)")
    tars = list_shards(shards_dir)
    inputs.require_shards(tars, "select input", metadata=("key", "status"))  # a damaged shard stops, naming it
    inputs.require_parquet(scores_dir, "scores", ("key", "clip_score"))
    width = len(name_of(tars[0][1])) if tars else 0  # the download's own names: one width per folder
    joined = joined_rows(ctx.spark, shards_dir, scores_dir)
    df, clip_rule, hash_extra = tag_rows(ctx.spark, ctx.cfg, joined)
    counts = {r[REASON]: r["count"] for r in df.groupBy(REASON).count().collect()}
    stats.input_rows = sum(counts.values())
    for reason, n in counts.items():
        if reason is not None:
            stats.drop(reason, n)
    stats.output_rows = n_kept = counts.get(None, 0)

    sizes = reshard(ctx.spark, df.where(F.col(REASON).isNull()), n_kept, shards_dir, width, tars, tmp,
                    sel.shard_size, sel.seed)
    dropped = df.where(F.col(REASON).isNotNull()).orderBy("key").select(
        "uid", F.col("key").alias("source_key"), "url", "clip_score", "phash", REASON, DUPLICATE_OF)
    write_single_parquet(dropped, f"{tmp}/{DROPPED_FILE}", schemas.SELECT_DROPPED)
    stats.extra = {
        "cutoff": clip_rule.cutoff, "cutoff_inclusive": clip_rule.inclusive, "threshold": sel.threshold,
        "threshold_rule": None if sel.threshold is not None else sel.threshold_rule,
        "top_fraction": None if sel.threshold is not None or (hash_extra.get("valley") or {}).get("found") else sel.top_fraction,
        "quantile": f"percentile_approx(accuracy={QUANTILE_ACCURACY}) over all scored pairs",
        "final_shards": len(sizes), "shard_size": sel.shard_size, "seed": sel.seed, **hash_extra,
    }
    for cached in (joined, df):
        cached.unpersist()


# --- the plan: which rows go, and why ---------------------------------------------------------------


def joined_rows(spark, shards_dir: str, scores_dir: str):
    """The download metadata joined with the scores; rows without an image (``not_downloaded``) or a
    score (``score_error``) are tagged out before any filter sees them. Cached."""
    from pyspark.sql import functions as F

    meta = spark.read.schema(schemas.to_spark(schemas.SHARD_METADATA)).parquet(storage.to_spark_path(shards_dir) + "/*.parquet")
    score_df = (
        spark.read.schema(schemas.to_spark(schemas.SCORES)).parquet(storage.to_spark_path(scores_dir) + "/*.parquet")
        .select("key", "clip_score", "unsafe_score", "score_error")
    )
    return meta.join(score_df, "key", "left").withColumn(REASON, (
        F.when(F.col("status") != "success", "not_downloaded")
        .when(F.col("clip_score").isNull() | F.isnan("clip_score"), "score_error")
    )).cache()


def tag_rows(spark, cfg, joined):
    """The selection plan: every row of ``joined`` with ``drop_reason`` (null: kept; else the first
    rule that drops it, in REASONS order) and ``duplicate_of``. Returns (rows, the CLIP-score rule,
    the figures of the valley and hash rules for the stats)."""
    from pyspark.sql import functions as F

    from filters import registry

    sel = cfg.select
    hash_extra: dict = {}
    # The CLIP cut's place: a threshold, the valley of the whole scored pool's histogram, or a quantile
    # of that pool (before the image rules).
    score_rule, pool_cut = registry.filter_class("low_clip_score"), None
    scored = joined.where(F.col(REASON).isNull())
    if sel.threshold is None and sel.threshold_rule == "valley":
        hash_extra["valley"] = valley = valley_cut(*score_histogram(scored, VALLEY_BINS))
        if valley["found"]:
            cfg = cfg.model_copy(update={"select": sel.model_copy(update={"threshold": valley["threshold"]})})
        else:
            f = sel.top_fraction
            valley["fallback"] = f"top_fraction {f}" if f is not None and f < 1 else "every scored pair kept"
    if (q := score_rule.pool_quantile(cfg)) is not None:
        pool_cut = scored.agg(F.percentile_approx("clip_score", q, QUANTILE_ACCURACY).alias("q")).first()["q"]
    clip_rule = score_rule.from_config(cfg, pool_cut)

    # Images that must not be in the set at all (blocklisted, evaluation-set copies, unsafe), then
    # the image filters, then exact image dedup among the rows still in (the best-scored copy
    # stays; ties: smallest uid), near-duplicate clusters (the same rule), then the CLIP cut.
    df = _drop_hash_matches(spark, joined, sel, hash_extra)
    df = _apply_filters(df, [registry.build("unsafe", cfg)] + [registry.build(name, cfg) for name in registry.IMAGE_FILTERS])
    df = _drop_exact_duplicates(df) if sel.dedup_images else df.withColumn(DUPLICATE_OF, F.lit(None).cast("string"))
    if sel.near_dup:
        df = _drop_near_duplicates(df.cache(), sel, hash_extra)
    if clip_rule.cutoff is not None:
        df = _apply_filters(df, [clip_rule])
    return df.cache(), clip_rule, hash_extra


def score_histogram(scored, bins: int) -> tuple[np.ndarray, float, float]:
    """(counts per bin, lowest score, highest score) of the ``clip_score`` column of ``scored``,
    counted in Spark: only the ``bins`` counts reach the driver."""
    from pyspark.sql import functions as F

    r = scored.agg(F.min("clip_score").alias("lo"), F.max("clip_score").alias("hi")).first()
    counts = np.zeros(bins, dtype=np.int64)
    if r["lo"] is None or r["hi"] <= r["lo"]:
        return counts, r["lo"] or 0.0, r["hi"] or 0.0
    lo, hi = float(r["lo"]), float(r["hi"])
    b = F.least(F.floor((F.col("clip_score") - lo) / ((hi - lo) / bins)).cast("int"), F.lit(bins - 1))
    for row in scored.groupBy(b.alias("b")).count().collect():
        counts[row["b"]] = row["count"]
    return counts, lo, hi


def valley_cut(counts, lo: float, hi: float) -> dict:
    """The valley rule on a score histogram (``counts`` over equal bins from ``lo`` to ``hi``).

    The histogram is smoothed by a Gaussian of Silverman's bandwidth (0.9 · min(sd, IQR/1.34) ·
    n^-1/5); the two most prominent modes of the smoothed curve are found (scipy's find_peaks), and
    the cut is the score at the lowest point between them. It counts as a valley only when that
    point is at most VALLEY_MAX_RATIO of the lower mode and each side holds MIN_MODE_SHARE of the
    pairs; otherwise ``found`` is False with the ``reason`` (one mode, too few scores)."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    counts = np.asarray(counts, dtype=np.float64)
    n, bins = int(counts.sum()), len(counts)
    out: dict = {"found": False, "threshold": None, "modes": None, "pairs": n, "bins": bins}
    if n < MIN_VALLEY_SCORES or hi <= lo:
        return {**out, "reason": f"too few distinct scores ({n} pairs)"}
    width = (hi - lo) / bins
    centres = lo + (np.arange(bins) + 0.5) * width
    mean = float((counts * centres).sum() / n)
    sd = float(np.sqrt((counts * (centres - mean) ** 2).sum() / n))
    cdf = np.cumsum(counts) / n
    iqr = float(np.interp(0.75, cdf, centres) - np.interp(0.25, cdf, centres))
    spread = min(sd, iqr / 1.34) if iqr > 0 else sd
    sigma = max(0.9 * spread * n ** -0.2 / width, 1.0)  # in bins
    density = gaussian_filter1d(counts, sigma, mode="constant")
    peaks, props = find_peaks(np.concatenate([[0.0], density, [0.0]]), prominence=0)
    peaks, prominence = peaks - 1, props["prominences"]
    out["smoothing_bins"] = round(float(sigma), 2)
    if len(peaks) < 2:
        return {**out, "reason": "one mode"}
    a, b = sorted(peaks[np.argsort(prominence)[-2:]])
    v = a + int(np.argmin(density[a : b + 1]))
    ratio = float(density[v] / min(density[a], density[b]))
    below = float(counts[:v].sum() / n)
    out.update(modes=[round(float(centres[a]), 4), round(float(centres[b]), 4)], valley_ratio=round(ratio, 3),
               share_below=round(below, 4))
    if ratio > VALLEY_MAX_RATIO:
        return {**out, "reason": f"no valley: the dip between the modes is {ratio:.0%} of the lower mode"}
    if min(below, 1 - below) < MIN_MODE_SHARE:
        return {**out, "reason": f"one mode: a side of the dip holds {min(below, 1 - below):.1%} of the pairs"}
    return {**out, "found": True, "threshold": round(float(lo + v * width), 6), "reason": "valley between two modes"}


def _drop_exact_duplicates(df):
    """``duplicate_image``: same sha256 as a better-scored row still in (ties: smallest uid). Ranked
    among the rows still in only: the copy kept is never one dropped earlier."""
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    ok = F.col(REASON).isNull()
    best_first = Window.partitionBy("sha256", ok).orderBy(F.col("clip_score").desc(), "uid")
    df = df.withColumn("_rank", F.when(ok & F.col("sha256").isNotNull(), F.row_number().over(best_first)))
    df = df.withColumn(DUPLICATE_OF, F.when(ok & (F.col("_rank") > 1), F.first("key").over(best_first)))
    df = df.withColumn(REASON, F.when(ok & (F.col("_rank") > 1), "duplicate_image").otherwise(F.col(REASON)))
    return df.drop("_rank")


def _hash_rows(df):
    """The rows still in that have a pHash, as (id, phash, colour_grid) with id = the sample key."""
    from pyspark.sql import functions as F

    return df.where(F.col(REASON).isNull() & F.col("phash").isNotNull()).select(
        F.col("key").alias("id"), "phash", "colour_grid", "copy_thumb")


def _mark(df, keys, reason: str):
    """Tag the rows still in whose key is in ``keys`` (a one-column DataFrame of keys) with ``reason``."""
    from pyspark.sql import functions as F

    hit = keys.select(F.col(keys.columns[0]).alias("key")).distinct().withColumn("_hit", F.lit(True))
    return (df.join(hit, "key", "left")
            .withColumn(REASON, F.when(F.col(REASON).isNull() & F.col("_hit"), reason).otherwise(F.col(REASON)))
            .drop("_hit"))


def _drop_hash_matches(spark, df, sel, extra: dict):
    """``blocklisted`` then ``eval_overlap``: rows whose image is within the near-duplicate
    distance of a blocklisted hash (pHash only: a list carries no colours) or of an evaluation
    image (pHash and colours, as near_duplicate). Fills ``extra`` with the counts per list/set."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from pipeline import near_dup

    if not sel.blocklist_hashes and not sel.decontaminate:
        return df
    d = sel.near_dup_distance
    rows = _hash_rows(df).cache()
    n_rows = rows.count()
    if sel.blocklist_hashes:
        lists = [near_dup.read_blocklist(path) for path in sel.blocklist_hashes]
        hashes = sorted({h for phashes, _ in lists for h in phashes})
        digests = sorted({d for _, sha256s in lists for d in sha256s})
        extra["blocklist"] = {"files": sel.blocklist_hashes, "hashes": len(hashes), "sha256s": len(digests)}
        n_exact = n_hit = 0
        if digests:  # exact: the image's bytes, whether or not it has a pHash
            exact = df.where(F.col(REASON).isNull() & F.lower(F.col("sha256")).isin(digests)).select("key").cache()
            n_exact = exact.count()
            df = _mark(df, exact, "blocklisted")
            rows = rows.join(exact.select(F.col("key").alias("id")), "id", "left_anti").cache()
            n_rows = rows.count()
        if hashes:  # perceptual: within the near-duplicate distance of a listed pHash
            schema = T.StructType([T.StructField("id", T.LongType(), False), T.StructField("phash", T.LongType(), False),
                                   T.StructField("colour_grid", T.ArrayType(T.ShortType()), True)])
            refs = spark.createDataFrame([(h, h, None) for h in hashes], schema)
            bands = sel.near_dup_bands or near_dup.choose_bands(max(n_rows, len(hashes)), d)
            hits = near_dup.match_pairs(rows, refs, d, bands, None).select("left_id").cache()
            n_hit = hits.distinct().count()
            df = _mark(df, hits, "blocklisted")
            rows = rows.join(hits.select(F.col("left_id").alias("id")).distinct(), "id", "left_anti").cache()
            n_rows -= n_hit
            extra["blocklist"]["bands"] = bands
        extra["blocklist"].update(matched=n_exact + n_hit, matched_exact=n_exact)
    if sel.decontaminate:
        refs = near_dup.reference_signatures(spark, sel.decontaminate).cache()
        per_set = {r["set"]: (r["images"], r["unreadable"]) for r in refs.groupBy("set").agg(
            F.count("phash").alias("images"), F.sum(F.col("phash").isNull().cast("int")).alias("unreadable")).collect()}
        n_refs = sum(n for n, _ in per_set.values())
        bands = sel.near_dup_bands or near_dup.choose_bands(max(n_rows, n_refs), d)
        ref_rows = refs.select(F.col("source").alias("id"), "phash", "colour_grid", "copy_thumb")
        if sel.copy_confirm:  # the hashes propose, copy detection confirms (pipeline/copy_detect.py)
            pairs = near_dup.candidate_pairs(rows, ref_rows, d, bands, sel.near_dup_colour_tolerance)
            pairs, extra["eval_unconfirmable"] = near_dup.confirm_pairs(pairs, rows, ref_rows, CopyThresholds.of(sel))
            near_dup.warn_unconfirmable(extra["eval_unconfirmable"], "eval_overlap")
        else:
            extra["eval_unconfirmable"] = 0  # nothing to compare: the hashes decide
            pairs = near_dup.match_pairs(rows, ref_rows, d, bands, sel.near_dup_colour_tolerance)
        hits = (pairs.join(refs.select(F.col("source").alias("right_id"), "set"), "right_id")
                .select(F.col("left_id").alias("key"), "set").distinct().localCheckpoint())
        overlap = {r["set"]: r["count"] for r in hits.groupBy("set").count().collect()}
        df = _mark(df, hits.select("key"), "eval_overlap")
        extra["eval_overlap"] = {s: overlap.get(s, 0) for s in sel.decontaminate}
        extra["eval_images"] = {s: per_set.get(s, (0, 0))[0] for s in sel.decontaminate}
        extra["eval_unreadable"] = {s: per_set.get(s, (0, 0))[1] for s in sel.decontaminate}
        extra["eval_bands"] = bands
        refs.unpersist()
    rows.unpersist()
    return df.cache()


def _drop_near_duplicates(df, sel, extra: dict):
    """``near_duplicate``: the clusters of images within the near-duplicate distance (and colour
    tolerance) of each other, among the rows still in; each cluster's best-scored member stays
    (ties: smallest uid, then key), as exact dedup keeps the best copy."""
    from pyspark.sql import functions as F

    from pipeline import near_dup

    d, tol = sel.near_dup_distance, sel.near_dup_colour_tolerance
    label = F.struct((-F.col("clip_score")).alias("score"), F.col("uid").alias("uid"), F.col("key").alias("key"))
    counts = df.where(F.col(REASON).isNull()).agg(F.count("phash").alias("hashed"), F.count("*").alias("all")).first()
    n = counts["hashed"]
    bands = sel.near_dup_bands or near_dup.choose_bands(n, d)
    info = {"distance": d, "colour_tolerance": tol, "bands": bands, "copy_confirm": sel.copy_confirm,
            "copy_max_residual": sel.copy_max_residual, "copy_max_peak": sel.copy_max_peak,
            "copy_peak_floor": sel.copy_peak_floor, "copy_peak_per_residual": sel.copy_peak_per_residual, "candidates": 0, "unconfirmable": 0, "unguarded": 0, "exhaustive": bands > d, "hashed": n,
            "unhashed": counts["all"] - n, "pairs": 0, "clusters": 0, "rounds": 0, "dropped": 0}
    extra["near_dup"] = info
    if n < 2:
        return df
    nodes = (df.where(F.col(REASON).isNull() & F.col("phash").isNotNull())
             .select(F.col("key").alias("id"), "phash", "colour_grid", "copy_thumb", label.alias("label")).cache())
    thumbs = nodes.select("id", "copy_thumb")
    if sel.copy_confirm:  # clusters from confirmed edges only
        pairs = near_dup.candidate_pairs(nodes, nodes, d, bands, tol, same=True).localCheckpoint()
        info["candidates"] = pairs.count()
        pairs, info["unconfirmable"] = near_dup.confirm_pairs(pairs, thumbs, thumbs, CopyThresholds.of(sel))
        near_dup.warn_unconfirmable(info["unconfirmable"], "near_duplicate")
    else:
        pairs = near_dup.match_pairs(nodes, nodes, d, bands, tol, same=True).cache()
        info["candidates"] = pairs.count()
    # Checkpointed: the rounds of label propagation then plan over a short lineage.
    edges = pairs.select(F.col("left_id").alias("a"), F.col("right_id").alias("b")).localCheckpoint()
    info["pairs"] = n_edges = edges.count()
    if n_edges:
        labels, info["rounds"] = near_dup.propagate_min_label(edges, nodes.select("id", "label"))
        losers = labels.where(F.col("label.key") != F.col("id")).select(
            F.col("id").alias("key"), F.col("label.key").alias("_best"))
        if sel.copy_confirm:  # chain guard: a member goes only when it is a copy of the member that stays
            chained = losers.select(F.col("key").alias("left_id"), F.col("_best").alias("right_id"))
            guard, _ = near_dup.confirm_pairs(chained, thumbs, thumbs, CopyThresholds.of(sel))
            kept_by_guard = losers.count()
            losers = guard.select(F.col("left_id").alias("key"), F.col("right_id").alias("_best"))
        losers = losers.cache()
        info["dropped"] = losers.count()
        if sel.copy_confirm:
            info["unguarded"] = kept_by_guard - info["dropped"]  # chained in, but not a copy of the one that stays
        info["clusters"] = labels.select("label").distinct().count()
        df = (_mark(df, losers.select("key"), "near_duplicate").join(losers, "key", "left")
              .withColumn(DUPLICATE_OF, F.when(F.col(REASON) == "near_duplicate", F.col("_best")).otherwise(F.col(DUPLICATE_OF)))
              .drop("_best"))
    nodes.unpersist()
    pairs.unpersist()
    edges.unpersist()
    return df
