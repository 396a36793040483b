"""Arrow schemas of every stage's output, their Spark form, and a validator used on write.

One source of truth: each schema is a ``pyarrow.Schema``; ``to_spark`` derives the Spark
``StructType`` from it, so the two can never drift. Fields marked ``nullable=False`` must be
present and non-null in every row.
"""

from __future__ import annotations

import pyarrow as pa

from pipeline.errors import UserError


class SchemaError(UserError):
    """A dataset does not have the columns or types its stage promises."""


def _f(name: str, typ: pa.DataType, nullable: bool = True, doc: str = "") -> pa.Field:
    return pa.field(name, typ, nullable=nullable, metadata={"doc": doc} if doc else None)


# --- extract: candidate (image URL, text) pairs, with provenance -------------------------------
CANDIDATE_FIELDS = [
    _f("uid", pa.string(), False, "stable hash of (url, text), pipeline.ids.make_uid"),
    _f("url", pa.string(), False, "absolute http(s) image URL, fragment stripped"),
    _f("text", pa.string(), False, "cleaned caption: entities unescaped, whitespace normalised"),
    _f("text_source", pa.string(), False, "alt | title | caption (URL lists)"),
    _f("page_url", pa.string(), True, "page the image was found on"),
    _f("source_file", pa.string(), False, "input file the pair came from"),
    _f("record_id", pa.string(), True, "WARC-Record-ID or row number"),
    _f("page_lang", pa.string(), True, "page language Common Crawl recorded (languages-cld2), if any"),
]
CANDIDATES = pa.schema(CANDIDATE_FIELDS)

# --- filter: candidates + what the caption filters computed ------------------------------------
FILTERED = pa.schema(
    CANDIDATE_FIELDS
    + [
        _f("lang", pa.string(), True, "detected caption language, ISO 639-1"),
        _f("lang_score", pa.float32(), True, "language detector confidence"),
    ]
)

# Rows a filter dropped, kept for the report: the candidate + which filter dropped it.
DROPPED = pa.schema(list(FILTERED) + [_f("drop_reason", pa.string(), False, "filter name")])

# --- queries: the "500k" list ------------------------------------------------------------------
QUERIES = pa.schema(
    [
        _f("entry_id", pa.int32(), False, "index in the list (stable)"),
        _f("entry", pa.string(), False, "case-sensitive query string"),
        _f("source", pa.string(), False, "wordnet | numbers | unigrams | bigrams | titles | wordfreq | file"),
        _f("count", pa.int64(), True, "source count (word count, views …) when known"),
    ]
)

# --- match / balance ---------------------------------------------------------------------------
MATCHED = pa.schema(list(FILTERED) + [_f("entry_ids", pa.list_(pa.int32()), False, "matched entries, ascending")])
BALANCED = pa.schema(list(MATCHED) + [_f("keep_prob", pa.float64(), False, "1 - prod(1 - p_entry)")])

# --- download: one row per input sample per shard (img2dataset's columns + ours) ---------------
SHARD_METADATA = pa.schema(
    list(FILTERED)
    + [
        _f("entry_ids", pa.list_(pa.int32()), True),
        _f("keep_prob", pa.float64(), True),
        _f("key", pa.string(), False, "sample key in the shard, NNNNNNNNN (shard * size + index)"),
        _f("shard", pa.int32(), False),
        _f("status", pa.string(), False, "success | failed"),
        _f("error_message", pa.string(), True, "failure reason from the fixed vocabulary"),
        _f("width", pa.int32(), True),
        _f("height", pa.int32(), True),
        _f("original_width", pa.int32(), True),
        _f("original_height", pa.int32(), True),
        _f("bytes", pa.int64(), True, "size of the stored image"),
        _f("sha256", pa.string(), True, "sha256 of the stored image bytes"),
        _f("phash", pa.int64(), True, "64-bit pHash of the stored picture (imagehash; hex = its two's complement), "
           "pipeline/near_dup.py"),
        _f("colour_grid", pa.list_(pa.int16()), True, "mean R, G, B of the picture's 2×2 cells (12 values, 0–255)"),
        _f("copy_thumb", pa.binary(), True, "64×64 RGB thumbnail of the stored picture as a JPEG q95 4:4:4 (~4 KB "
           "a photo; WebP from earlier runs is read too): what pipeline/copy_detect.py confirms near-duplicate candidates with"),
    ]
)

# --- score ---------------------------------------------------------------------------------------
SCORES = pa.schema(
    [
        _f("uid", pa.string(), False),
        _f("key", pa.string(), False),
        _f("shard", pa.int32(), False),
        _f("clip_score", pa.float32(), True, "cosine of L2-normalised embeddings; null when unscorable"),
        _f("unsafe_score", pa.float32(), True, "zero-shot probability mass on score.safety_prompts.unsafe, in [0, 1]; "
           "null when score.safety is off or the pair is unscorable"),
        _f("score_error", pa.string(), True, "why a sample could not be scored"),
        # fp16 little-endian bytes (np.frombuffer(b, "<f2")): Spark has no half-float type.
        _f("image_embedding", pa.binary(), True, "L2-normalised, fp16 bytes"),
        _f("text_embedding", pa.binary(), True, "L2-normalised, fp16 bytes"),
    ]
)

# --- select: the final training set -------------------------------------------------------------
MANIFEST = pa.schema(
    [
        _f("uid", pa.string(), False),
        _f("key", pa.string(), False, "key in the final shard"),
        _f("shard", pa.string(), False, "final shard file name"),
        _f("url", pa.string(), False),
        _f("text", pa.string(), False),
        _f("clip_score", pa.float32(), True),
        _f("keep_prob", pa.float64(), True),
        _f("entry_ids", pa.list_(pa.int32()), True),
        _f("lang", pa.string(), True),
        _f("width", pa.int32(), True),
        _f("height", pa.int32(), True),
        _f("sha256", pa.string(), True),
        _f("phash", pa.int64(), True, "64-bit pHash of the image (see shard metadata)"),
        _f("source_key", pa.string(), True, "key in the download shards"),
    ]
)

# Rows select dropped (final/dropped.parquet), for the report and for grading against ground truth.
SELECT_DROPPED = pa.schema(
    [
        _f("uid", pa.string(), False),
        _f("source_key", pa.string(), False, "key in the download shards"),
        _f("url", pa.string(), False),
        _f("clip_score", pa.float32(), True),
        _f("phash", pa.int64(), True),
        _f("drop_reason", pa.string(), False, "pipeline.select.REASONS"),
        _f("duplicate_of", pa.string(), True, "duplicate_image / near_duplicate: source_key of the copy kept"),
    ]
)

# --- per-stage stats (_stats.json beside every stage's output) ----------------------------------
STATS = pa.schema(
    [
        _f("stage", pa.string(), False),
        _f("started_at", pa.string(), False, "ISO 8601 UTC"),
        _f("duration_s", pa.float64(), False),
        _f("input_rows", pa.int64(), True),
        _f("output_rows", pa.int64(), True),
        _f("drops", pa.map_(pa.string(), pa.int64()), False, "rows dropped, by reason"),
        _f("extra", pa.string(), True, "stage-specific figures, JSON"),
    ]
)

ALL = {
    "candidates": CANDIDATES,
    "filtered": FILTERED,
    "dropped": DROPPED,
    "queries": QUERIES,
    "matched": MATCHED,
    "balanced": BALANCED,
    "shard_metadata": SHARD_METADATA,
    "scores": SCORES,
    "manifest": MANIFEST,
    "select_dropped": SELECT_DROPPED,
    "stats": STATS,
}


def get(name: str) -> pa.Schema:
    try:
        return ALL[name]
    except KeyError:
        raise SchemaError(f"unknown schema {name!r}; known: {', '.join(ALL)}") from None


def to_spark(schema: pa.Schema):
    """The Spark StructType of an Arrow schema (pyspark's own converter; nullability kept)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def conform(table: pa.Table | pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """Select and cast the schema's columns (adding absent nullable ones as nulls), then validate."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    cols = []
    for field in schema:
        if field.name in table.column_names:
            col = table[field.name]
            if col.type != field.type:
                try:
                    col = col.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise SchemaError(f"column {field.name!r}: cannot cast {col.type} to {field.type}: {e}") from None
        elif field.nullable:
            col = pa.nulls(table.num_rows, field.type)
        else:
            raise SchemaError(f"missing required column {field.name!r}")
        cols.append(col)
    out = pa.Table.from_arrays(cols, schema=schema)
    validate(out, schema)
    return out


def validate(table: pa.Table | pa.RecordBatch, schema: pa.Schema) -> None:
    """Raise SchemaError naming the column when ``table`` does not match ``schema`` exactly."""
    names = set(table.schema.names)
    for field in schema:
        if field.name not in names:
            raise SchemaError(f"missing column {field.name!r} (schema needs {field.type})")
        col = table.column(field.name)
        if col.type != field.type:
            raise SchemaError(f"column {field.name!r} has type {col.type}, schema needs {field.type}")
        if not field.nullable and col.null_count:
            raise SchemaError(f"column {field.name!r} has {col.null_count} null(s) but is required")
    extra = names - set(schema.names)
    if extra:
        raise SchemaError(f"unexpected column(s) {sorted(extra)}")


def validate_spark(df, schema: pa.Schema) -> None:
    """Check a Spark DataFrame's columns and types against an Arrow schema (nullability aside)."""
    want = {f.name: f.dataType for f in to_spark(schema).fields}
    got = {f.name: f.dataType for f in df.schema.fields}
    for name, typ in want.items():
        if name not in got:
            raise SchemaError(f"missing column {name!r} (schema needs {typ.simpleString()})")
        if got[name] != typ:
            raise SchemaError(f"column {name!r} has type {got[name].simpleString()}, schema needs {typ.simpleString()}")
    extra = set(got) - set(want)
    if extra:
        raise SchemaError(f"unexpected column(s) {sorted(extra)}")
