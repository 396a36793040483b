"""Where the crawl's files are, and how they are written and read: every byte through
``pipeline.storage`` (fsspec), so the output may be any path or URL (local, ``s3://`` …), from the
driver, the fetch tasks and the frontier's Spark jobs alike. Files and folders are written under a
temporary name and renamed when whole, so a reader never sees half of one.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline import storage

FRONTIER = pa.schema([("url", pa.string()), ("depth", pa.int32()), ("host", pa.string()), ("group", pa.int32())])
REJECTED = pa.schema([("url", pa.string()), ("depth", pa.int32()), ("reason", pa.string())])
INDEX = pa.schema([("url", pa.string()), ("status", pa.int32()), ("mime", pa.string()), ("file", pa.string()),
                   ("offset", pa.int64()), ("length", pa.int64())])
PAGES = pa.schema([("url", pa.string()), ("depth", pa.int32()), ("reason", pa.string()),
                   ("links", pa.list_(pa.string()))])
FOLDERS = ("frontier", "rejected", "warc", "index", "pages", "rounds")


def round_name(r: int, g: int | None = None, c: int | None = None) -> str:
    return f"round-{r:05d}" if g is None else f"round-{r:05d}-part-{g:05d}-{c:05d}"


def temporary(path: str) -> str:
    return f"{path}.tmp-{uuid.uuid4().hex[:8]}"


def move(src: str, dst: str) -> None:
    """Rename a file written whole into place."""
    fs, s = storage.fs_for(src)
    fs.mv(s, storage.fs_for(dst)[1])


def write_table(rows: list[dict], schema: pa.Schema, path: str) -> None:
    """A Parquet file, written whole under a temporary name, then renamed."""
    tmp = temporary(path)
    write_arrow(pa.Table.from_pylist(rows, schema=schema), tmp)
    move(tmp, path)


def write_arrow(table: pa.Table, path: str) -> int:
    """A Parquet file of ``table`` at ``path`` as it is (in a folder ``write_folder`` renames whole, or
    a temporary name); returns its rows."""
    fs, p = storage.fs_for(path)
    fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(p, "wb") as f:
        pq.write_table(table, f)
    return table.num_rows


def list_values(paths: list[str], column: str) -> int:
    """About how many values the list column ``column`` holds in the Parquet files at ``paths`` (an
    empty list counts one): from the files' metadata, nothing else is read."""
    n = 0
    for path in parquet_files(paths):
        fs, p = storage.fs_for(path)
        with fs.open(p, "rb") as f:
            meta = pq.ParquetFile(f).metadata
            leaf = [i for i in range(meta.num_columns) if meta.schema.column(i).path.split(".")[0] == column]
            n += sum(meta.row_group(g).column(i).num_values for g in range(meta.num_row_groups) for i in leaf)
    return n


def write_folder(path: str, write: Callable[[str], int]) -> int:
    """Run ``write(folder) -> rows`` into a temporary folder and move it to ``path`` when it wrote any
    rows (none: nothing is left). Returns the rows."""
    class _Empty(Exception):
        pass

    n = 0
    try:
        with storage.atomic_path(path) as tmp:
            n = write(tmp)
            if not n:
                raise _Empty
    except _Empty:
        pass
    return n


def dataset(paths: str | list[str]) -> ds.Dataset:
    """The Parquet files or folders at ``paths`` as one pyarrow dataset (any filesystem)."""
    paths = [paths] if isinstance(paths, str) else paths
    fs, first = storage.fs_for(paths[0])
    if len(paths) == 1:
        return ds.dataset(first, filesystem=fs, format="parquet")
    return ds.dataset([storage.fs_for(p)[1] for p in parquet_files(paths)], filesystem=fs, format="parquet")


def parquet_files(paths: list[str]) -> list[str]:
    """The Parquet files at ``paths`` (files, or folders of them), as URLs the storage layer opens."""
    out = []
    for path in paths:
        fs, p = storage.fs_for(path)
        if fs.isdir(p):
            prefix = path.rstrip("/")
            out += [f"{prefix}/{f.rsplit('/', 1)[-1]}" for f in sorted(fs.find(p))
                    if f.endswith(".parquet") and not f.rsplit("/", 1)[-1].startswith(("_", "."))]
        else:
            out.append(path)
    return out


def value_counts(paths: list[str], column: str) -> Counter:
    """How often each value of ``column`` occurs in the Parquet files or folders (None as "None")."""
    counts: Counter = Counter()
    if not paths:
        return counts
    table = dataset(paths).to_table(columns=[column])
    for item in pc.value_counts(table.column(column)).to_pylist():
        counts[str(item["values"])] += item["counts"]
    return counts


class CrawlFiles:
    """Where the crawl's files are under ``out`` (the package docstring lists them); used by the
    driver and by the fetch tasks."""

    def __init__(self, out: str):
        self.out = out.rstrip("/")

    def path(self, kind: str, r: int, g: int | None = None, c: int | None = None) -> str:
        ext = {"warc": ".warc.gz", "rounds": ".json", "frontier": "", "rejected": ""}.get(kind, ".parquet")
        return f"{self.out}/{kind}/{round_name(r, g, c)}{ext}"

    def prepare(self) -> None:
        """The folders, without the leftovers of a killed run."""
        for d in FOLDERS:
            fs, p = storage.fs_for(f"{self.out}/{d}")
            fs.makedirs(p, exist_ok=True)
            storage.clean_temporaries(f"{self.out}/{d}")

    def exists(self, kind: str, r: int, g: int | None = None, c: int | None = None) -> bool:
        return storage.exists(self.path(kind, r, g, c))

    def listing(self, kind: str, prefix: str = "", suffix: str = "") -> list[str]:
        """The names in one of the folders (sorted), those with ``prefix`` and ``suffix``."""
        fs, p = storage.fs_for(f"{self.out}/{kind}")
        if not fs.exists(p):
            return []
        fs.invalidate_cache(p)
        names = (e.rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(p, detail=False))
        return sorted(n for n in names if n.startswith(prefix) and n.endswith(suffix) and ".tmp-" not in n)

    def rounds_on_disk(self) -> Iterator[int]:
        r = 0
        while self.exists("frontier", r):
            yield r
            r += 1

    def parts(self, r: int) -> list[str]:
        """The complete parts of round r: their pages files."""
        return [f"{self.out}/pages/{n}" for n in self.listing("pages", round_name(r) + "-part-", ".parquet")]

    def rows(self, kind: str, r: int) -> int:
        return dataset(self.path(kind, r)).count_rows()

    def group_chunks(self, r: int, g: int, size: int) -> Iterator[list[dict]]:
        """Group g's frontier rows of round r, by URL, in lists of ``size`` (the last one shorter),
        read a batch at a time: the frontier holds each group in one file, sorted by URL, so the
        same rows make the same parts on a rerun."""
        batches = dataset(self.path("frontier", r)).to_batches(
            columns=["url", "depth"], filter=ds.field("group") == g, use_threads=False)
        chunk: list[dict] = []
        for batch in batches:
            for row in batch.to_pylist():
                chunk.append(row)
                if len(chunk) == size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    def write_json(self, path: str, data: dict) -> None:
        storage.write_json(path, data)

    def read_json(self, path: str) -> dict:
        return storage.read_json(path)


# --- Spark's reads and writes ---------------------------------------------------------------------------
# Spark's own Parquet reader and writer where Spark has a Hadoop filesystem for the path (local, hdfs://,
# s3a:// with the hadoop-aws jar): the fast way. Elsewhere (s3:// without that jar, any other fsspec URL)
# the Spark tasks read and write the files themselves through the storage layer.


def spark_native(spark, path: str) -> bool:
    """Whether Spark's own I/O reaches ``path`` (it has a Hadoop filesystem for the scheme)."""
    sp = storage.to_spark_path(path)
    scheme = sp.split("://", 1)[0] if "://" in sp else "file"
    if scheme == "file":
        return True
    try:
        spark._jvm.org.apache.hadoop.fs.FileSystem.getFileSystemClass(scheme, spark._jsc.hadoopConfiguration())
        return True
    except Exception:  # noqa: BLE001 - py4j's error for "no FileSystem for scheme"
        return False

_SPARK_TYPES = {pa.string(): "string", pa.int32(): "int", pa.int64(): "bigint", pa.list_(pa.string()): "array<string>"}


def spark_schema(schema: pa.Schema) -> str:
    return ", ".join(f"`{f.name}` {_SPARK_TYPES[f.type]}" for f in schema)


def _read_files(schema: pa.Schema):
    def read(batches):
        for batch in batches:
            for path in batch.column(0).to_pylist():
                fs, p = storage.fs_for(path)
                with fs.open(p, "rb") as f:
                    for b in pq.ParquetFile(f).iter_batches(columns=schema.names):
                        yield pa.RecordBatch.from_arrays([b.column(name).cast(t) for name, t in zip(schema.names, schema.types)],
                                                         schema=schema)
    return read


def spark_read(spark, paths: list[str], schema: pa.Schema):
    """A DataFrame of the Parquet files or folders at ``paths`` (columns of ``schema``): Spark's reader, or
    the Spark tasks reading them through the storage layer."""
    if spark_native(spark, paths[0]):
        return spark.read.schema(spark_schema(schema)).parquet(*[storage.to_spark_path(p) for p in paths])
    files = parquet_files(paths)
    listing = spark.createDataFrame([(f,) for f in files], "path string")
    tasks = max(1, min(len(files), 4 * spark.sparkContext.defaultParallelism))
    return listing.repartition(tasks).mapInArrow(_read_files(schema), spark_schema(schema))


def _write_partitions(folder: str, schema: pa.Schema):
    def write(batches):
        from pyspark import TaskContext

        path = f"{folder}/part-{TaskContext.get().partitionId():05d}.parquet"
        fs, p = storage.fs_for(path)
        writer, f, n = None, None, 0
        try:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                if writer is None:
                    fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
                    f = fs.open(p, "wb")
                    writer = pq.ParquetWriter(f, schema)
                writer.write_batch(pa.RecordBatch.from_arrays(
                    [batch.column(name).cast(t) for name, t in zip(schema.names, schema.types)], schema=schema))
                n += batch.num_rows
        finally:
            if writer is not None:
                writer.close()
                f.close()
        yield pa.RecordBatch.from_pylist([{"rows": n}], schema=pa.schema([("rows", pa.int64())]))
    return write


def spark_write(df, folder: str, schema: pa.Schema) -> int:
    """Write each partition of ``df`` as one Parquet file under ``folder`` (Spark's writer, or the tasks
    through the storage layer, where a partition with no rows writes nothing); returns the rows written."""
    from pyspark.sql import functions as F

    if spark_native(df.sparkSession, folder):
        df.select(*schema.names).write.parquet(storage.to_spark_path(folder))
        return dataset(folder).count_rows()
    written = df.select(*schema.names).mapInArrow(_write_partitions(folder, schema), "rows bigint")
    return written.agg(F.sum("rows")).first()[0] or 0
