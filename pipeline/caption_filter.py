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
from typing import Any

from pipeline import log, storage
from pipeline.errors import UserError

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


def _read_input(spark, path: str):
    """The input as a DataFrame with every CANDIDATES column (absent nullable ones as nulls)."""
    from pyspark.sql import functions as F

    from schemas import CANDIDATES, to_spark

    storage.require_exists(path, "filter input")
    try:
        df = spark.read.parquet(storage.to_spark_path(path))
    except Exception as e:
        raise UserError(f"filter: cannot read {path} as Parquet: {str(e).splitlines()[0]}") from None
    missing = [c for c in ("url", "text") if c not in df.columns]
    if missing:
        raise UserError(f"filter: input {path} lacks column(s) {missing} (needs at least url and text)")
    want = to_spark(CANDIDATES)
    cols = []
    for field in want.fields:
        if field.name in df.columns:
            cols.append(F.col(field.name).cast(field.dataType).alias(field.name))
        else:
            cols.append(F.lit(None).cast(field.dataType).alias(field.name))
    return df.select(*cols)


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

    return tag_batches(_fill_nulls(batches) if first else batches, cfg_json, names, schema)


def run_filter(cfg, spark=None, input_path: str | None = None, output: str | None = None,
               dropped_output: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Filter ``input_path`` (default candidates/) into filtered/ and dropped/filter/; returns stats."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from filters.chain import REASON, expand_names
    from pipeline.spark import get_spark
    from pipeline.stats import StageStats, read_stats
    from schemas import DROPPED, FILTERED, validate_spark

    src = (input_path or cfg.path("candidates")).rstrip("/")
    out = (output or cfg.path("filtered")).rstrip("/")
    dropped_out = (dropped_output or cfg.path(DROPPED_NAME)).rstrip("/")
    if storage.is_complete(out) and storage.is_complete(dropped_out) and not overwrite:
        log.info(f"filter: {out} is complete, skipping (use --overwrite to redo)")
        return read_stats(out) or {}
    storage.require_exists(src, "filter input")  # user mistakes fail before Spark starts
    names = expand_names(cfg.filter.chain)
    if "language" in names:  # a missing model is a one-line error here, not a worker traceback
        from filters.language import LanguageDetector

        LanguageDetector(cfg.filter.language_backend, cfg.filter.language_model)
    spark = spark or get_spark(cfg.spark)
    stats = StageStats("filter")
    log.info(f"filter: {src} → {out} (chain: {', '.join(names)})")
    df = _read_input(spark, src)
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
        for parent in {p.rsplit("/", 1)[0] for p in (out, dropped_out) if "/" in p}:
            storage.clean_temporaries(parent)
        with storage.atomic_path(dropped_out) as tmp:
            dropped.write.parquet(storage.to_spark_path(tmp))
        storage.mark_complete(dropped_out)
        with storage.atomic_path(out) as tmp:
            kept.write.parquet(storage.to_spark_path(tmp))
            stats.input_rows = sum(counts.values())
            stats.output_rows = counts.get(None, 0)
            for reason, n in counts.items():
                if reason is not None:
                    stats.drop(reason, n)
            stats.extra = {
                "chain": names, "language_backend": cfg.filter.language_backend, "languages": cfg.filter.languages,
                "detected_languages": dict(langs.most_common()),
                "input": src, "dropped_output": dropped_out,
            }
            result = stats.write(tmp)
        storage.mark_complete(out)
    finally:
        tagged.unpersist()
    return result


# --------------------------------------------------------------------------- CLI
def register(sub, common) -> None:
    from pipeline.cli import flag

    p = sub.add_parser(
        "filter", parents=[common], help="caption filters: URL safety, text rules, language, dedup",
        description="Apply the caption filter chain (config filter.chain, in order: url_safety, text_rules = "
        "min_length/max_length/junk, language, dedup) to a candidates dataset (default <output_dir>/candidates). "
        "Kept rows with their detected language go to <output_dir>/filtered (Parquet), dropped rows with the "
        "filter that dropped them to <output_dir>/dropped/filter; filtered/_stats.json counts drops per filter.",
    )
    p.add_argument("input", nargs="?", help="input dataset (default: <output_dir>/candidates)")
    p.add_argument("--output", help="output folder (default: <output_dir>/filtered)")
    p.add_argument("--dropped-output", help="folder for dropped rows (default: <output_dir>/dropped/filter)")
    flag(p, "--language-backend", key="filter.language_backend", choices=["cascade", "fasttext", "langdetect"])
    flag(p, "--languages", key="filter.languages", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
         help="comma-separated ISO 639-1 codes to keep (config filter.languages, default en)")
    flag(p, "--min-language-score", key="filter.min_language_score", type=float)
    flag(p, "--min-chars", key="filter.min_chars", type=int)
    flag(p, "--min-words", key="filter.min_words", type=int)
    flag(p, "--max-chars", key="filter.max_chars", type=int)
    p.add_argument("--overwrite", action="store_true", help="redo a complete output")
    p.set_defaults(func=_cli)


def _cli(args, cfg) -> int:
    from pipeline.stats import summary_line

    d = run_filter(cfg, input_path=args.input, output=args.output, dropped_output=args.dropped_output,
                   overwrite=args.overwrite)
    if d:
        print(summary_line(d))
    return 0
