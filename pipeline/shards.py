"""Read download shards (img2dataset's webdataset layout): list them, iterate a tar's samples.

Used by score and select; no torch here, so Spark workers that only move bytes stay light.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator

from pipeline import log, storage
from pipeline.errors import UserError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def list_shards(folder: str) -> list[tuple[int, str]]:
    """(shard number, tar path) of every ``NNNNN.tar`` in a download folder, in order."""
    fs, p = storage.fs_for(folder)
    if not fs.exists(p):
        raise UserError(f"shards folder not found: {folder} (run `wit download` first)")
    out = []
    for name in sorted(fs.ls(p, detail=False)):
        base = name.rsplit("/", 1)[-1]
        stem = base[: -len(".tar")]
        if base.endswith(".tar") and stem.isdigit():
            out.append((int(stem), f"{folder.rstrip('/')}/{base}"))
    return out


def shard_name(shard: int) -> str:
    return f"{shard:05d}"


def iter_tar(fileobj, keep=lambda index: True) -> Iterator[tuple[int, str, dict[str, bytes]]]:
    """(index, key, {ext: bytes}) per sample of a webdataset tar (members grouped by key).

    Members of samples with ``keep(index)`` false are skipped without reading their data, so
    several workers can share one tar cheaply. A truncated tar ends the iteration, not the job.
    """
    index, key, sample = -1, None, {}
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*" if not fileobj.seekable() else "r:") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                base = m.name.rsplit("/", 1)[-1]
                k, _, ext = base.partition(".")
                if k != key:
                    if key is not None and sample is not None:
                        yield index, key, sample
                    index, key = index + 1, k
                    sample = {} if keep(index) else None
                if sample is not None:
                    f = tf.extractfile(m)
                    sample[ext.lower()] = f.read() if f else b""
    except (tarfile.TarError, EOFError, OSError) as e:
        log.warn(f"tar ended early ({type(e).__name__}: {e}); keeping the samples read so far")
    if key is not None and sample is not None:
        yield index, key, sample


def sample_json(sample: dict[str, bytes]) -> dict:
    """A sample's ``key.json`` metadata as a dict ({} when absent or not valid JSON)."""
    try:
        meta = json.loads(sample["json"]) if "json" in sample else {}
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}
