"""Paths on any filesystem (local, s3://, hdfs:// … through fsspec) and atomic, resumable writes.

A stage's output is complete when its ``_SUCCESS`` marker exists; it is written last, after the
data was moved into place, so a crash at any moment leaves either nothing or a complete output.
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

import fsspec

from pipeline.errors import UserError

SUCCESS = "_SUCCESS"


def fs_for(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for a path or URL, and the path as that filesystem names it."""
    fs, _, paths = fsspec.get_fs_token_paths(path, storage_options=storage_options(path))
    return fs, paths[0]


def storage_options(path: str) -> dict[str, Any]:
    """Options for object stores from the usual environment (AWS_ENDPOINT_URL and friends)."""
    if path.startswith(("s3://", "s3a://")):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return {"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {}
    return {}


def to_spark_path(path: str) -> str:
    """Spark (Hadoop) spells S3 as s3a://; local paths become absolute."""
    if path.startswith("s3://"):
        return "s3a://" + path[len("s3://"):]
    if "://" not in path:
        return os.path.abspath(path)
    return path


def exists(path: str) -> bool:
    fs, p = fs_for(path)
    return fs.exists(p)


def require_exists(path: str, what: str = "input") -> None:
    if not exists(path):
        raise UserError(f"{what} not found: {path}")


def is_complete(path: str) -> bool:
    """True when a stage output at ``path`` finished (its _SUCCESS marker exists)."""
    fs, p = fs_for(path)
    return fs.exists(f"{p.rstrip('/')}/{SUCCESS}")


def mark_complete(path: str) -> None:
    fs, p = fs_for(path)
    fs.makedirs(p, exist_ok=True)
    with fs.open(f"{p.rstrip('/')}/{SUCCESS}", "wb") as f:
        f.write(b"")


def remove(path: str) -> None:
    fs, p = fs_for(path)
    if fs.exists(p):
        fs.rm(p, recursive=True)


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary sibling path to write into; move it to ``path`` only if the block succeeds.

    Works for single files and folders. An earlier incomplete attempt's temporary is left for
    ``clean_temporaries`` to remove; it never shadows the real output.
    """
    fs, p = fs_for(path)
    parent = p.rsplit("/", 1)[0] if "/" in p else "."
    fs.makedirs(parent, exist_ok=True)
    base = path.rstrip("/")
    tmp = f"{base}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        fs_t, tp = fs_for(tmp)
        if fs.exists(p):
            fs.rm(p, recursive=True)
        fs_t.mv(tp, p, recursive=True)
    except BaseException:
        remove(tmp)
        raise


def clean_temporaries(folder: str) -> int:
    """Remove leftovers of killed attempts (``*.tmp-*``) in a folder; returns how many."""
    fs, p = fs_for(folder)
    if not fs.exists(p):
        return 0
    n = 0
    for entry in fs.ls(p, detail=False):
        if ".tmp-" in entry.rsplit("/", 1)[-1]:
            fs.rm(entry, recursive=True)
            n += 1
    return n


def write_json(path: str, obj: Any) -> None:
    """Write JSON atomically (temporary name, then rename)."""
    with atomic_path(path) as tmp:
        fs, p = fs_for(tmp)
        with fs.open(p, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)


def read_json(path: str) -> Any:
    fs, p = fs_for(path)
    with fs.open(p, "r") as f:
        return json.load(f)
