"""Damaged input files: one check, used by every stage where it opens its input.

At scale some input files are always damaged: not the expected format, empty, cut short, or written
with another schema. Each stage either skips such a file (recording the reason and a count in its
stats) or stops with one line naming the file (``InputFileError``, shown by the CLI without a
traceback). Which one a stage does is in README "Damaged inputs". The checks here read only a
file's first and last bytes (and a Parquet footer), so they cost nothing next to the stage itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pipeline import storage
from pipeline.errors import (  # noqa: F401 (re-exported: the reasons belong to this module's checks)
    EMPTY,
    NOT_FORMAT,
    TRUNCATED,
    UNREADABLE,
    WRONG_SCHEMA,
    InputFileError,
    TarFormatError,
    UserError,
)

# What is wrong with a file (InputFileError.reason).
_MAGIC = (  # (prefix, kind) checked in order; tar is checked separately (its magic sits at byte 257)
    (b"PAR1", "parquet"), (b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"), (b"WARC/", "warc"),
)


def read_ends(path: str, n: int = 4096) -> tuple[int, bytes, bytes]:
    """(size, first n bytes, last n bytes) of a file on any filesystem."""
    fs, p = storage.fs_for(path)
    size = fs.size(p) or 0
    with fs.open(p, "rb") as f:
        head = f.read(n)
        if size > n:
            f.seek(max(size - n, 0))
            tail = f.read(n)
        else:
            tail = head
    return size, head, tail


def kind_of(head: bytes) -> str:
    """The container a file's first bytes announce: parquet, gzip, bz2, zstd, xz, warc, tar, or "unknown"."""
    for prefix, kind in _MAGIC:
        if head.startswith(prefix):
            return kind
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return "unknown"


def _starts(head: bytes) -> str:
    kind = kind_of(head)
    return f"starts with {head[:8]!r}" + ("" if kind == "unknown" else f": a {kind} file")


def decompressing(raw) -> tuple[str, Any]:
    """(compression, readable stream) of a seekable binary file: gzip (multi-member) and bz2 (also
    multistream) picked by magic bytes, else the file itself ("none")."""
    import bz2
    import gzip

    kind = kind_of(raw.read(8))
    raw.seek(0)
    if kind == "gzip":
        return kind, gzip.GzipFile(fileobj=raw)
    if kind == "bz2":
        return kind, bz2.BZ2File(raw)
    return "none", raw


def decompressed_head(path: str, n: int = 1 << 16) -> tuple[str, bytes]:
    """(compression, first ≤ n bytes after decompression)."""
    fs, p = storage.fs_for(path)
    with fs.open(p, "rb") as raw:
        kind, stream = decompressing(raw)
        try:
            return kind, stream.read(n)
        except (OSError, EOFError, ValueError):
            return kind, b""  # cut inside the first block: nothing readable


def read_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged compressed or XML file raises (see ``damage_reason``)."""
    import xml.etree.ElementTree as ET
    import zlib

    return ET.ParseError, EOFError, OSError, ValueError, zlib.error


def damage_reason(e: BaseException) -> str:
    """TRUNCATED for a stream or document that ends early, else UNREADABLE."""
    cut = isinstance(e, EOFError) or "no element found" in str(e) or "unclosed token" in str(e)
    return TRUNCATED if cut else UNREADABLE


def parquet_problem(path: str, required: Iterable[str] = (), schema: Any = None) -> tuple[str, str] | None:
    """(reason, detail) when ``path`` is not a usable Parquet file, else None.

    ``required``: columns that must be present; ``schema`` (pyarrow): columns that, when present,
    must be castable to its types.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    size, head, tail = read_ends(path, 8)
    if size == 0:
        return EMPTY, "the file is empty (0 bytes)"
    if not head.startswith(b"PAR1"):
        return NOT_FORMAT, f"not a Parquet file ({_starts(head)})"
    if not tail.endswith(b"PAR1"):
        return TRUNCATED, f"cut short: no Parquet footer at the end ({size} bytes)"
    fs, p = storage.fs_for(path)
    try:
        with fs.open(p, "rb") as fh:
            got = pq.ParquetFile(fh).schema_arrow
    except (pa.ArrowException, OSError) as e:
        return UNREADABLE, f"unreadable Parquet footer: {str(e).splitlines()[0]}"
    missing = [c for c in required if c not in got.names]
    if missing:
        return WRONG_SCHEMA, f"wrong schema: no {' or '.join(missing)} column (columns: {', '.join(got.names) or 'none'})"
    for field in schema or ():
        if field.name in got.names and not _castable(got.field(field.name).type, field.type):
            return WRONG_SCHEMA, f"wrong schema: column {field.name!r} is {got.field(field.name).type}, not {field.type}"
    return None


def _castable(src, dst) -> bool:
    import pyarrow as pa

    if src == dst:
        return True
    try:
        pa.array([], type=src).cast(dst)
        return True
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False


def tar_problem(path: str) -> tuple[str, str] | None:
    """(reason, detail) when ``path`` is not a whole tar archive, else None.

    Reads only both ends: a whole archive starts with a ustar header (or is all zeros: no members),
    is a whole number of 512-byte blocks and ends with the two zero blocks that close every tar.
    """
    size, head, tail = read_ends(path, 1024)
    if size == 0:
        return EMPTY, "the file is empty (0 bytes)"
    if kind_of(head) != "tar" and head.strip(b"\0"):
        return NOT_FORMAT, f"not a tar archive ({_starts(head)})"
    if size % 512 or len(tail) < 1024 or tail.strip(b"\0"):
        return TRUNCATED, f"cut short: no end-of-archive blocks at the end ({size} bytes)"
    return None


def shard_problems(shards: Iterable[tuple[int, str]], metadata: Iterable[str] | None = ("uid", "key")) -> list[dict]:
    """``{"path", "reason", "detail"}`` of each damaged shard file: a tar (``tar_problem``), or with
    ``metadata`` the NNNNN.parquet beside it missing or lacking those columns (None: tars only)."""
    out = []
    for _, tar in shards:
        problem = tar_problem(tar)
        if problem is None and metadata is not None:
            tar = tar[: -len(".tar")] + ".parquet"
            problem = parquet_problem(tar, metadata) if storage.exists(tar) else (EMPTY, "missing")
        if problem:
            out.append({"path": tar, "reason": problem[0], "detail": problem[1]})
    return out


def require_shards(shards: Iterable[tuple[int, str]], what: str, metadata: Iterable[str] | None = ("uid", "key")) -> None:
    """Stop (InputFileError) at the first damaged shard (``shard_problems``)."""
    for d in shard_problems(shards, metadata)[:1]:
        raise InputFileError(d["path"], d["reason"], d["detail"], what)


def text_problem(path: str, decompress: bool = False) -> tuple[str, str] | None:
    """(reason, detail) when ``path`` is not a non-empty UTF-8 text file; gzip/bz2 text passes with
    ``decompress`` (a cut past its first block is found only when read: ``damage_reason``)."""
    if decompress:
        comp, head = decompressed_head(path)
        if comp != "none" and not head:
            return TRUNCATED, f"{comp}-compressed, but nothing could be decompressed: cut short or damaged"
    else:
        head = read_ends(path, 1 << 16)[1]
    if not head.strip():
        return EMPTY, "the file is empty"
    if kind_of(head) != "unknown" or b"\0" in head:
        return NOT_FORMAT, f"not a text file ({_starts(head)})"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a character cut at the end of what was read
            return NOT_FORMAT, f"not UTF-8 text (byte {e.start})"
    return None


def check_parquet_inputs(paths: Iterable[str], required: Iterable[str] = (), schema: Any = None) -> list[tuple[str, str, str]]:
    """(path, reason, detail) of every file of ``paths`` that ``parquet_problem`` finds unusable."""
    required = list(required)
    out = []
    for path in paths:
        problem = parquet_problem(path, required, schema)
        if problem:
            out.append((path, *problem))
    return out


def parquet_files(path: str) -> list[str]:
    """The data files of a Parquet dataset: a file, or a folder's ``*.parquet`` files (as Spark reads it,
    see pipeline.spark.read_parquet) outside ``_``/``.`` names and temporaries."""
    fs, p = storage.fs_for(path)
    if not fs.isdir(p):
        return [path]
    proto = path.split("://", 1)[0] + "://" if "://" in path else ""
    root = p.rstrip("/")
    out = []
    for f in sorted(fs.find(p)):
        rel = f[len(root) + 1:]
        if f.endswith(".parquet") and not any(d.startswith(("_", ".")) for d in rel.split("/")) and ".tmp-" not in rel:
            out.append(proto + f if proto and not f.startswith(proto) else f)
    return out


def require_parquet(path: str | list[str], what: str, required: Iterable[str] = (), schema: Any = None) -> list[str]:
    """The Parquet files of ``path`` (a dataset path, or its files); stops (InputFileError) at the first damaged one.

    For datasets this pipeline wrote and the next stage needs whole: skipping a part would lose its
    rows silently, so the user reruns the stage that wrote it (or removes the file) instead.
    """
    if isinstance(path, str):
        storage.require_exists(path, what)
    files = parquet_files(path) if isinstance(path, str) else list(path)
    if not files:
        raise UserError(f"{what}: no data files in {path}")
    for f, reason, detail in check_parquet_inputs(files, required, schema):
        raise InputFileError(f, reason, detail, what)
    return files


def require_seed_file(path: str, url_col: str) -> None:
    """Stop (InputFileError) when a crawl seeds file is damaged: a .parquet file unusable or without
    ``url_col``; a text or .csv file empty or binary. The seeds are the whole crawl: none is skipped."""
    if path.endswith(".parquet"):
        problem = parquet_problem(path, [url_col])
    else:
        problem = text_problem(path)
    if problem:
        raise InputFileError(path, *problem, "crawl seeds")


# Errors that damaged data raises inside the libraries the stages read with; the CLI turns any that
# a stage's own check did not catch first into one line (the check's message names the file).
def damaged_data_errors() -> tuple[type[BaseException], ...]:
    import json
    import tarfile
    import zlib

    import pyarrow as pa


    return (pa.ArrowInvalid, tarfile.TarError, TarFormatError, EOFError, zlib.error,
            json.JSONDecodeError, UnicodeDecodeError)


_SPARK_READ = re.compile(r"\[FAILED_READ_FILE[.\w]*\] (Encountered error while reading file \S+?)\.?\s")


def describe_damage(e: BaseException) -> str | None:
    """One line for an error of damaged data (``damaged_data_errors``, or a Spark job that failed reading
    a file: Spark names it), else None (a bug: keep its traceback)."""
    if type(e).__module__.startswith(("py4j", "pyspark")) and (m := _SPARK_READ.search(str(e))):
        return f"damaged input: {m.group(1)} (FAILED_READ_FILE)"
    if not isinstance(e, damaged_data_errors()):
        return None
    first = (str(e).splitlines() or [""])[0]
    return f"damaged input data: {type(e).__name__}: {first}"
