"""Download's plan: the input's Parquet files cut, in input order, into shards of row ranges
(``plan_shards``), and one shard's rows read back by range with the columns download carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.errors import UserError
from pipeline.ids import make_uid


@dataclass
class ShardSpec:
    shard: int
    segments: list[tuple[str, int, int]]  # (file, first row, end row) in input order

    @property
    def n_rows(self) -> int:
        return sum(b - a for _, a, b in self.segments)


def input_files(path: str) -> list[str]:
    """The Parquet files of a dataset (a file or a folder, Spark-written or not), sorted by path."""
    fs, p = storage.fs_for(path)
    if not fs.exists(p):
        raise UserError(f"download: input not found: {path} (run `wit balance` first, or pass --input)")
    proto = path.split("://", 1)[0] + "://" if "://" in path else ""
    if fs.isfile(p):
        return [path]
    files = []
    for f in sorted(fs.find(p)):
        rel = f[len(p.rstrip("/")) + 1:]
        if f.endswith(".parquet") and not any(part.startswith(("_", ".")) for part in rel.split("/")):
            files.append(proto + f if proto and not f.startswith(proto) else f)
    if not files:
        raise UserError(f"download: no .parquet files in {path}")
    return files


def plan_shards(path: str, shard_size: int) -> tuple[list[tuple[str, int]], list[ShardSpec]]:
    """(files with row counts, shards): consecutive row ranges of ``shard_size`` rows over the files."""
    files = []
    for f in input_files(path):
        fs, p = storage.fs_for(f)
        with fs.open(p, "rb") as fh:
            files.append((f, pq.ParquetFile(fh).metadata.num_rows))
    specs: list[ShardSpec] = []
    cur: list[tuple[str, int, int]] = []
    room = shard_size
    for f, n in files:
        start = 0
        while start < n:
            take = min(room, n - start)
            cur.append((f, start, start + take))
            start += take
            room -= take
            if room == 0:
                specs.append(ShardSpec(len(specs), cur))
                cur, room = [], shard_size
    if cur:
        specs.append(ShardSpec(len(specs), cur))
    return files, specs


def carried_schema() -> pa.Schema:
    from schemas import FILTERED, SHARD_METADATA

    return pa.schema(list(FILTERED) + [SHARD_METADATA.field("entry_ids"), SHARD_METADATA.field("keep_prob")])


def check_input_schema(path: str) -> None:
    """Fail early, with one line, when the input lacks url/text or has uncastable columns."""
    fs, p = storage.fs_for(path)
    with fs.open(p, "rb") as fh:
        schema = pq.ParquetFile(fh).schema_arrow
    missing = [c for c in ("url", "text") if c not in schema.names]
    if missing:
        raise UserError(f"download: input {path} has no {' or '.join(missing)} column (columns: {', '.join(schema.names)})")
    for field in carried_schema():
        if field.name in schema.names:
            got = schema.field(field.name).type
            if got != field.type and not _castable(got, field.type):
                raise UserError(f"download: input column {field.name!r} is {got}, cannot be read as {field.type}")


def _castable(src: pa.DataType, dst: pa.DataType) -> bool:
    try:
        pa.array([], type=src).cast(dst)
        return True
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False


def read_shard_rows(spec: ShardSpec) -> list[dict[str, Any]]:
    """The shard's rows (carried columns only), read by row range: only the row groups it overlaps."""
    carried = carried_schema()
    rows: list[dict[str, Any]] = []
    for path, start, stop in spec.segments:
        fs, p = storage.fs_for(path)
        with fs.open(p, "rb") as fh:
            pf = pq.ParquetFile(fh)
            cols = [n for n in carried.names if n in pf.schema_arrow.names]
            first = 0
            for rg in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(rg).num_rows
                lo, hi = max(start, first), min(stop, first + n)
                if lo < hi:
                    t = pf.read_row_group(rg, columns=cols).slice(lo - first, hi - lo)
                    rows.extend(_conform_rows(t, carried, path))
                first += n
    return rows


def _conform_rows(t: pa.Table, carried: pa.Schema, path: str) -> list[dict[str, Any]]:
    arrays = {}
    for field in carried:
        if field.name in t.column_names:
            col = t[field.name]
            try:
                arrays[field.name] = col.cast(field.type) if col.type != field.type else col
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                arrays[field.name] = pa.nulls(t.num_rows, field.type)
        else:
            arrays[field.name] = pa.nulls(t.num_rows, field.type)
    rows = pa.table(arrays).to_pylist()
    for r in rows:  # required columns never null: fill what a bare URL list lacks
        r["url"] = r["url"] or ""
        r["text"] = r["text"] if r["text"] is not None else ""
        r["uid"] = r["uid"] or make_uid(r["url"], r["text"])
        r["text_source"] = r["text_source"] or "caption"
        r["source_file"] = r["source_file"] or path
    return rows
