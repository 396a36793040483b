"""Select's writer: the rows a selection keeps, re-sharded into the final training shards.

Given the tagged rows (pipeline/select.py decides which go and why), this module only writes:
kept samples ordered by a hash of (uid, seed), so every final shard mixes all download shards, cut
into ``final/NNNNN.tar`` of ``shard_size`` samples (key.jpg|png|webp, key.txt, key.json with the
final key, source key and CLIP score), ``manifest.parquet`` (schemas.MANIFEST) and ``sizes.json``
({"NNNNN.tar": n}, what open_clip's webdataset loader reads). Shard names and keys follow
pipeline.shards' rule. Everything goes under the stage's temporary folder (pipeline.stage renames it).
"""

from __future__ import annotations

import json

import schemas
from pipeline import storage
from pipeline.errors import UserError
from pipeline.shards import SampleTarWriter, index_digits, shard_name, shard_name_column

KEY_INDEX_DIGITS = 4  # final keys pad the in-shard index to at least 4 digits


def reshard(spark, kept, n_kept: int, shards_dir: str, width: int, tars: list, out: str, shard_size: int,
            seed: int) -> dict[str, int]:
    """Write the ``n_kept`` rows of ``kept`` (download-shard metadata + clip_score) as final shards,
    manifest.parquet and sizes.json under ``out``; return sizes. ``tars``/``width``: the download
    shards (pipeline.shards.list_shards) and their names' width."""
    fs, p = storage.fs_for(out)
    fs.makedirs(p, exist_ok=True)
    n_final = -(-n_kept // shard_size)
    numbered = number_rows(spark, kept, shard_size, n_final, seed).cache()
    try:
        write_single_parquet(numbered.orderBy("_idx").select(*_manifest_columns()), f"{out}/manifest.parquet",
                             schemas.MANIFEST)
        sizes = write_shards(numbered, shards_dir, width, tars, out, n_final) if n_kept else {}
    finally:
        numbered.unpersist()
    if sum(sizes.values()) != n_kept:
        raise UserError(f"select: wrote {sum(sizes.values())} samples but selected {n_kept}: download shards changed?")
    storage.write_json(f"{out}/sizes.json", sizes)
    return sizes


def number_rows(spark, kept, size: int, n_final: int, seed: int):
    """The deterministic shuffle across shards: rows ordered by a hash of (uid, seed) and numbered
    (``_idx``), with their final shard (``_final_shard``), its name and the final key."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    hashed = kept.withColumn("_h", F.xxhash64("uid", F.lit(str(seed))))
    indexed = hashed.orderBy("_h", "uid").rdd.zipWithIndex().map(lambda ri: (*ri[0], ri[1]))
    schema = T.StructType(hashed.schema.fields + [T.StructField("_idx", T.LongType(), False)])
    numbered = spark.createDataFrame(indexed, schema)
    final_shard = (F.col("_idx") / size).cast("int")
    final_name = shard_name_column(final_shard, n_final)
    idx_digits = index_digits(size, KEY_INDEX_DIGITS)
    return numbered.withColumn("_final_shard", final_shard).withColumn(
        "_final_key", F.concat(final_name, F.lpad((F.col("_idx") % size).cast("string"), idx_digits, "0"))
    ).withColumn("_final_name", final_name)


def _manifest_columns() -> list:
    """schemas.MANIFEST's columns from the numbered rows."""
    from pyspark.sql import functions as F

    return ["uid", F.col("_final_key").alias("key"), F.concat("_final_name", F.lit(".tar")).alias("shard"),
            "url", "text", "clip_score", "keep_prob", "entry_ids", "lang", "width", "height", "sha256", "phash",
            F.col("key").alias("source_key")]


def write_shards(numbered, shards_dir: str, width: int, tars: list, out: str, n_final: int) -> dict[str, int]:
    """Read each download shard once (a Spark task each), route its kept samples to their final shard,
    and write final shard i in partition i, samples in index order. Returns {"NNNNN.tar": n}."""
    by_source = numbered.select("shard", "key", "_idx", "_final_shard", "_final_key", "clip_score").rdd.map(
        lambda r: (r["shard"], (r["key"], r["_idx"], r["_final_shard"], r["_final_key"], r["clip_score"]))
    ).groupByKey()
    missing = sorted({r["shard"] for r in numbered.select("shard").distinct().collect()} - {s for s, _ in tars})
    if missing:
        raise UserError(f"select: the metadata in {shards_dir} names shard(s) {missing[:5]} that have no tar there")
    written = (
        by_source.flatMap(lambda kv: _read_source_tar(f"{shards_dir}/{kv[0]:0{width}d}.tar", (kv[0], list(kv[1]))))
        .partitionBy(n_final, lambda s: s)
        .mapPartitionsWithIndex(lambda i, it: _write_final_tar(out, n_final, i, it))
        .collect()
    )
    return dict(sorted(written))


def _read_source_tar(tar_path: str, item) -> list:
    """Spark: one download shard → (final shard, (index, final key, {ext: bytes})) for kept samples."""
    from pipeline.shards import iter_tar, sample_json

    source_shard, kept = item
    want = {r[0]: r for r in kept}  # source_key -> (source_key, idx, final_shard, final_key, clip_score)
    fs, p = storage.fs_for(tar_path)
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


def _write_final_tar(out_dir: str, n_final: int, part: int, items) -> list:
    """Spark: write one final shard (partition i = shard i), samples in index order."""
    rows = sorted(items, key=lambda kv: kv[1][0])
    if not rows:
        return []
    name = f"{shard_name(part, n_final)}.tar"
    fs, p = storage.fs_for(f"{out_dir.rstrip('/')}/{name}")
    with fs.open(p, "wb") as f, SampleTarWriter(f) as tar:
        for _, (_, key, members) in rows:
            tar.write(key, members)
    return [(name, len(rows))]


def write_single_parquet(df, path: str, schema) -> None:
    """One parquet file (not a Spark folder) so every reader opens it as is.

    Spark writes the (ordered) rows in parallel; the part files, in partition order, are then
    concatenated into one file.
    """
    import pyarrow.parquet as pq

    tmp = f"{path}.parts"
    df.write.mode("overwrite").parquet(storage.to_spark_path(tmp))
    fs, tp = storage.fs_for(tmp)
    parts = sorted(p for p in fs.ls(tp, detail=False) if p.rsplit("/", 1)[-1].startswith("part-") and p.endswith(".parquet"))
    _, dest = storage.fs_for(path)
    # Streamed batch by batch, each conformed to the schema: driver memory stays flat in the pool size.
    with fs.open(dest, "wb") as f, pq.ParquetWriter(f, schema) as writer:
        if not parts:
            writer.write_table(schema.empty_table())
        for part in parts:
            with fs.open(part, "rb") as src:
                for batch in pq.ParquetFile(src).iter_batches(batch_size=65_536):
                    writer.write_table(schemas.conform(batch, schema))
    fs.rm(tp, recursive=True)
