"""The extract stage: one Spark task per input file, candidates deduplicated across files.

A task streams its file (memory flat in file size) through the reader of its format and yields
Arrow batches; its figures (records, pages, pairs, drops and input errors by reason) go to a small
JSON file that the driver sums into ``_stats.json``, so the pairs never travel to the driver. Exact
duplicates of (url, text) across files are removed with one Spark aggregation on ``uid``.
"""

from __future__ import annotations

import gc
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa

from pipeline import log, storage
from pipeline.errors import UserError
from pipeline.extract.inputs import FORMATS, default_inputs, detect_format, resolve_inputs, sample_crawl
from pipeline.extract.sink import FileStats, Options, PairSink
from pipeline.extract.url_lists import extract_url_list
from pipeline.extract.warc import extract_warc
from pipeline.extract.wat import extract_wat
from pipeline.stage import Flag, StageContext, stage


# --------------------------------------------------------------------------- one file
@contextmanager
def _fewer_gc_passes(young: int = 10_000):
    """Reading a file makes millions of short-lived objects (parsed JSON, strings) that reference
    counting frees; the cyclic collector's default pass every 700 allocations is a real share of WAT
    extraction time spent for nothing, so it runs less often while a file is read."""
    old = gc.get_threshold()
    gc.set_threshold(max(young, old[0]), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def extract_file(path: str, fmt: str, opts: Options, stats: FileStats | None = None) -> Iterator[pa.RecordBatch]:
    """All candidate batches of one input file. Errors are counted in ``stats``, never raised."""
    st = stats or FileStats(path)
    t0 = time.perf_counter()
    st.format = fmt = detect_format(path, fmt)
    sink = PairSink(path, st, opts, unescape=fmt != "warc",  # the HTML parser decoded the WARC's entities
                    caption_source="caption" if fmt in ("parquet", "csv", "tsv", "jsonl") else "alt")
    if fmt == "wat":
        gen = extract_wat(path, sink, opts)
    elif fmt == "warc":
        gen = extract_warc(path, sink, opts)
    elif fmt in ("parquet", "csv", "tsv", "jsonl"):
        gen = extract_url_list(path, fmt, sink, opts)
    else:
        st.error("unknown_format", path)
        gen = iter(())
    try:
        with _fewer_gc_passes():
            yield from gen
    except (OSError, EOFError, zlib.error, ValueError, pa.ArrowException) as e:
        st.error("read_error", f"{type(e).__name__}: {e}")
    last = sink.flush()
    if last is not None:
        yield last
    if st.records == 0 and not st.errors:
        st.error("empty_file", path)
    elif fmt in ("warc", "wat") and st.responses == 0 and not st.errors:
        # requests, metadata or WET conversions only: nothing to extract, but not an empty file
        st.error("no_responses", f"{path}: {st.records} records, none a response")
    st.seconds += time.perf_counter() - t0


# --------------------------------------------------------------------------- the Spark stage
def _task(stats_dir: str, opts: Options, fmt: str):
    """The mapInArrow function: each partition holds one (idx, path); yields its candidate batches."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for b in batches:
            for idx, path in zip(b.column("idx").to_pylist(), b.column("path").to_pylist()):
                st = FileStats(path)
                yield from extract_file(path, fmt, opts, st)
                storage.write_json(f"{stats_dir}/{idx:06d}.json", st.as_dict())

    return run


def _read_file_stats(stats_dir: str) -> list[dict[str, Any]]:
    """The per-file figures the tasks wrote, in input order."""
    fs, sp = storage.fs_for(stats_dir)
    if not fs.exists(sp):
        return []
    names = sorted(n.rsplit("/", 1)[-1] for n in fs.ls(sp, detail=False))
    return [storage.read_json(f"{stats_dir}/{n}") for n in names if n.endswith(".json")]


def aggregate(per_file: list[dict[str, Any]]) -> tuple[Counter, Counter, dict[str, int]]:
    drops, errors, totals = Counter(), Counter(), Counter()
    for d in per_file:
        drops.update(d["drops"])
        errors.update(d["errors"])
        for k in ("records", "records_fast", "records_lenient", "responses", "pages", "images", "pairs",
                  "opted_out_pages"):
            totals[k] += d.get(k, 0)
    return drops, errors, dict(totals)


@stage("extract", order=20, input=default_inputs, output="candidates", writes="atomic",
       help="WARC/WAT files and URL lists -> candidate (image URL, text) pairs",
       description="Read Common Crawl WARC/WAT files (or URL lists: parquet/csv/tsv/jsonl) and write every "
       "(absolute image URL, alt or title text) pair as the candidates dataset (output_dir/candidates, "
       "Parquet) with _stats.json (records, pages, pairs, drops and input errors by reason, per file). "
       "Pages that opt out of AI training (<meta name=robots content=noai|noimageai>, X-Robots-Tag noai, "
       "tdm-reservation: 1) give no pairs; their images are counted as opted_out_*. "
       "Inputs: files, globs, folders, fsspec URLs, or a paths file such as CC's wat.paths.gz. "
       "Default input: the sample web's crawl (wit sample).",
       input_help="input files/globs/URLs (default: config extract.inputs or the sample)",
       output_help="output folder (default: <output_dir>/candidates)", positional="*",
       options=[Flag("--format", key="extract.input_format", choices=["auto", *FORMATS]),
                Flag("--path-prefix", key="extract.path_prefix", help="prefix for the relative paths of a paths file"),
                Flag("--url-col", key="extract.url_col"),
                Flag("--caption-col", key="extract.caption_col"),
                Flag("--max-text-length", key="extract.max_text_length", type=int),
                Flag("--sample-source", key="extract.sample_source", choices=["warc", "wat"]),
                Flag("--strict", key="extract.strict", action="store_const", const=True,
                     help="fail (exit 2) when any input has errors (truncated records, bad Content-Length, bad JSON …)"),
                Flag("--ignore-opt-outs", key="extract.honour_opt_outs", action="store_const", const=False,
                     help="keep the images of pages that opt out of AI training (robots meta noai/noimageai, "
                     "X-Robots-Tag, tdm-reservation: 1); by default they are dropped as opted_out_meta/_header/_tdmrep"),
                Flag("--no-lenient", key="extract.lenient", action="store_const", const=False,
                     help="skip WAT records whose Content-Length is wrong instead of reading their JSON line")])
def run_extract(ctx: StageContext) -> None:
    """Extract candidates from ``input`` (files, globs, folders, fsspec URLs or paths files; default:
    config extract.inputs, else the sample crawl) into ``output`` (default: candidates/)."""
    from pyspark.sql import functions as F

    from schemas import CANDIDATES, to_spark, validate_spark

    cfg, ec = ctx.cfg, ctx.cfg.extract
    inputs = [ctx.input] if isinstance(ctx.input, str) else list(ctx.input)
    if inputs == [sample_crawl(cfg)] and not storage.exists(inputs[0]):
        raise UserError(f"extract: no inputs given and no sample crawl at {inputs[0]}: "
                        "run `wit sample` first, or pass WARC/WAT files or URL lists")
    files = resolve_inputs(inputs, ec.path_prefix)
    if not files:
        raise UserError("extract: no input files")
    log.info(f"extract: {len(files)} input file(s) → {ctx.output}")
    spark = ctx.spark
    # named "<output>.tmp-…" like the output's temporary, so a killed run's leftover is cleaned with it
    stats_dir = f"{ctx.tmp}.filestats"
    try:
        rdd = spark.sparkContext.parallelize(list(enumerate(files)), len(files))
        paths = spark.createDataFrame(rdd, "idx int, path string")
        pairs = paths.mapInArrow(_task(stats_dir, Options.from_config(ec, cfg.download.user_agent), ec.input_format), to_spark(CANDIDATES))
        rest = [c for c in CANDIDATES.names if c != "uid"]
        dedup = pairs.groupBy("uid").agg(F.min(F.struct(*rest)).alias("r")).select("uid", *[f"r.{c}" for c in rest])
        validate_spark(dedup, CANDIDATES)
        dedup.write.parquet(storage.to_spark_path(ctx.tmp))
        n_out = spark.read.parquet(storage.to_spark_path(ctx.tmp)).count()
        per_file = _read_file_stats(stats_dir)
    finally:
        storage.remove(stats_dir)
    drops, errors, totals = aggregate(per_file)
    st = ctx.stats
    st.drops.update(drops)
    st.drop("duplicate", totals.get("pairs", 0) - n_out)
    st.input_rows, st.output_rows = totals.get("images", 0), n_out
    st.extra = {"files": len(files), **totals, "errors": dict(errors),
                "strict": ec.strict, "lenient": ec.lenient, "per_file": per_file}
    if ec.strict and errors:
        bad = [f"{d['path']}: {', '.join(f'{k}={v}' for k, v in d['errors'].items())}" for d in per_file if d["errors"]]
        raise UserError(f"extract --strict: {sum(errors.values())} input error(s) in {len(bad)} file(s): "
                        + "; ".join(bad[:5]))
    if errors:
        log.warn(f"extract: input errors (not fatal; --strict makes them fatal): {dict(errors)}")
