"""`wit filter`: apply the caption filter chain (URL safety, text rules, language, dedup) to candidates.

Input: a candidates dataset (schemas.CANDIDATES; only uid, url and text are required, other
columns may be absent). Output: ``filtered/`` (schemas.FILTERED: kept rows with ``lang`` and
``lang_score``), ``dropped/filter/`` (schemas.DROPPED: the dropped rows and the filter that
dropped them) and ``filtered/_stats.json`` with drops per filter name.

The Arrow filters run in one ``mapInArrow`` pass (their models load once per Python worker);
``dedup`` is a Spark window over uid, so it is global across partitions, at its place in the chain.
"""

from __future__ import annotations

import collections

from pipeline import log, storage
from pipeline.spark import read_dataset
from pipeline.stage import Flag, Option, StageContext, stage

DROPPED_NAME = "dropped/filter"


def _segments(names: list[str]) -> list[list[str] | str]:
    """Split the chain at "dedup": [[arrow filters…], "dedup", [arrow filters…]]."""
    out: list[list[str] | str] = []
    for n in names:
        if n == "dedup":
            out.append("dedup")
        elif out and isinstance(out[-1], list):
            out[-1].append(n)
        else:
            out.append([n])
    return out


def _fill_nulls(batches):
    """Bad rows never crash the stage: null url/text become "" (the filters drop them), a null uid
    is computed the way extract does."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipeline.ids import make_uid

    for b in batches:
        t = pa.Table.from_batches([b])
        for name in ("url", "text", "text_source", "source_file"):
            if t.column(name).null_count:
                t = t.set_column(t.column_names.index(name), name, pc.fill_null(t.column(name), ""))
        if t.column("uid").null_count:
            uids = [u if u is not None else make_uid(url, text) for u, url, text in
                    zip(t.column("uid").to_pylist(), t.column("url").to_pylist(), t.column("text").to_pylist())]
            t = t.set_column(0, "uid", pa.array(uids, pa.string()))
        yield from t.to_batches()


def tag(cfg, df):
    """``df`` (CANDIDATES columns) → the same rows with lang, lang_score and drop_reason."""
    import functools

    import pyarrow as pa
    from pyspark.sql import functions as F

    from filters.chain import REASON, expand_names
    from filters.dedup import dedup_spark
    from schemas import DROPPED, to_spark

    tagged_schema = pa.schema([f.with_nullable(True) if f.name == REASON else f for f in DROPPED])
    cfg_json = cfg.model_dump_json()
    df = df.withColumn("lang", F.lit(None).cast("string")).withColumn("lang_score", F.lit(None).cast("float")) \
        .withColumn(REASON, F.lit(None).cast("string"))
    segments = _segments(expand_names(cfg.filter.chain))
    if not segments or segments[0] == "dedup":
        segments.insert(0, [])  # the first Python pass also repairs null uid/url/text
    for i, seg in enumerate(segments):
        if seg == "dedup":
            df = dedup_spark(df, REASON)
        else:
            fn = functools.partial(_tag_partition, cfg_json=cfg_json, names=tuple(seg), schema=tagged_schema, first=i == 0)
            df = df.mapInArrow(fn, to_spark(tagged_schema))
    return df


def _tag_partition(batches, cfg_json, names, schema, first):
    from filters.chain import tag_batches
    from pipeline.config import RunConfig

    return tag_batches(_fill_nulls(batches) if first else batches, cfg_json, names, schema, RunConfig.model_validate_json)


def _codes(text: str) -> list[str]:
    """``--languages en,de`` → ["en", "de"]."""
    return [x.strip() for x in text.split(",") if x.strip()]


def _default_dropped(cfg) -> str:
    return cfg.path(DROPPED_NAME)


@stage("filter", order=30, input="candidates", output="filtered",
       help="caption filters: URL safety, text rules, language, dedup",
       description="Apply the caption filter chain (config filter.chain, in order: url_safety, text_rules = "
       "min_length/max_length/junk, language, dedup) to a candidates dataset (default <output_dir>/candidates). "
       "Kept rows with their detected language go to <output_dir>/filtered (Parquet), dropped rows with the "
       "filter that dropped them to <output_dir>/dropped/filter; filtered/_stats.json counts drops per filter.",
       input_help="input dataset (default: <output_dir>/candidates)", positional="?",
       output_help="output folder (default: <output_dir>/filtered)",
       options=[Option("--dropped-output", metavar="PATH", help="folder for dropped rows (default: <output_dir>/dropped/filter)"),
                Flag("--language-backend", key="filter.language_backend", choices=["cascade", "fasttext", "langdetect"]),
                Flag("--languages", key="filter.languages", type=_codes, metavar="CODES",
                     help="comma-separated ISO 639-1 codes to keep (config filter.languages, default en)"),
                Flag("--min-language-score", key="filter.min_language_score", type=float),
                Flag("--min-chars", key="filter.min_chars", type=int),
                Flag("--min-words", key="filter.min_words", type=int),
                Flag("--max-chars", key="filter.max_chars", type=int)])
def run_filter(ctx: StageContext, dropped_output: str | None = None) -> None:
    """Filter the input (default candidates/) into filtered/, and the dropped rows into dropped/filter/."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from filters.chain import REASON, expand_names
    from schemas import CANDIDATES, DROPPED, FILTERED, validate_spark

    cfg, stats = ctx.cfg, ctx.stats
    dropped_out = (dropped_output or _default_dropped(cfg)).rstrip("/")
    storage.require_exists(ctx.input, "filter input")  # user mistakes fail before Spark starts
    names = expand_names(cfg.filter.chain)
    if "language" in names:  # a missing model or list is a one-line error here, not a worker traceback
        from filters.language import LanguageDetector

        LanguageDetector(cfg.filter.language_backend, cfg.filter.language_model)
    if "blocklisted" in names:
        from filters import registry

        registry.build("blocklisted", cfg).setup()
    spark = ctx.spark
    log.info(f"filter: {ctx.input} → {ctx.output} (chain: {', '.join(names)})")
    df = read_dataset(spark, ctx.input, CANDIDATES, "filter input")
    parallelism = spark.sparkContext.defaultParallelism
    if df.rdd.getNumPartitions() < parallelism:
        df = df.repartition(parallelism)
    tagged = tag(cfg, df).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts, langs = collections.Counter(), collections.Counter()
        for r in tagged.groupBy(REASON, "lang").count().collect():
            counts[r[REASON]] += r["count"]
            if r["lang"] is not None:
                langs[r["lang"]] += r["count"]
        kept = tagged.filter(F.col(REASON).isNull()).select(*FILTERED.names)
        dropped = tagged.filter(F.col(REASON).isNotNull()).select(*DROPPED.names)
        validate_spark(kept, FILTERED)
        validate_spark(dropped, DROPPED)
        # The dropped rows are complete before the kept ones: a complete filtered/ implies both.
        parent, _, base = dropped_out.rpartition("/")
        storage.clean_temporaries(parent or ".", base)
        with storage.atomic_path(dropped_out) as tmp:
            dropped.write.parquet(storage.to_spark_path(tmp))
        storage.mark_complete(dropped_out)
        kept.write.parquet(storage.to_spark_path(ctx.tmp))
        stats.input_rows = sum(counts.values())
        stats.output_rows = counts.get(None, 0)
        for reason, n in counts.items():
            if reason is not None:
                stats.drop(reason, n)
        stats.extra = {
            "chain": names, "language_backend": cfg.filter.language_backend, "languages": cfg.filter.languages,
            "detected_languages": dict(langs.most_common()),
            "input": ctx.input, "dropped_output": dropped_out,
        }
    finally:
        tagged.unpersist()
