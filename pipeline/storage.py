"""Paths on any filesystem (local, s3://, hdfs:// … through fsspec) and atomic, resumable writes.

A stage's output is complete when its ``_SUCCESS`` marker exists; it is written last, after the
data was moved into place, so a crash at any moment leaves either nothing or a complete output.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fsspec

from pipeline.errors import NOT_FORMAT, InputFileError, UserError

SUCCESS = "_SUCCESS"


def fs_for(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for a path or URL, and the path as that filesystem names it."""
    fs, _, paths = fsspec.get_fs_token_paths(path, storage_options=storage_options(path))
    return fs, paths[0]


# The run config's `storage` section ↔ the AWS environment variables every S3 client reads.
_ENV = {
    "endpoint_url": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "key": ("AWS_ACCESS_KEY_ID",),
    "secret": ("AWS_SECRET_ACCESS_KEY",),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
}


def configure(storage: Any) -> None:
    """Apply a run config's ``storage`` section (pipeline.config.StorageConfig) to this process.

    Set fields are exported as the usual AWS_* variables, so the same settings reach everything
    this process starts: s3fs here, Spark's JVM and its local Python workers. Call it once, right
    after loading the config and before starting Spark; on a cluster, executors get them from
    ``spark_conf(storage)``.
    """
    for field, names in _ENV.items():
        value = getattr(storage, field, None)
        if value:
            for name in names:
                os.environ[name] = value


def _setting(field: str) -> str | None:
    return next((os.environ[n] for n in _ENV[field] if os.environ.get(n)), None)


def storage_options(path: str) -> dict[str, Any]:
    """fsspec options for a path: for s3:// the endpoint, credentials and region from config/environment."""
    if not path.startswith(("s3://", "s3a://")):
        return {}
    opts: dict[str, Any] = {}
    client_kwargs = {}
    if endpoint := _setting("endpoint_url"):
        client_kwargs["endpoint_url"] = endpoint
    if region := _setting("region"):
        client_kwargs["region_name"] = region
    if client_kwargs:
        opts["client_kwargs"] = client_kwargs
    key, secret = _setting("key"), _setting("secret")
    if key and secret:
        opts.update(key=key, secret=secret)
    return opts


def spark_conf(storage: Any = None) -> dict[str, str]:
    """spark.* settings that give Spark the same object store: s3a:// for Spark's own reads and
    writes (needs the hadoop-aws jar, see README "Run on a cluster") and AWS_* on executors for
    the stages that write through fsspec. Values from ``storage`` (StorageConfig), else the environment.
    """
    def get(field: str) -> str | None:
        return getattr(storage, field, None) or _setting(field)

    conf: dict[str, str] = {}
    if endpoint := get("endpoint_url"):
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"  # MinIO/moto: bucket in the path, not the host name
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https://")).lower()
    if region := get("region"):
        conf["spark.hadoop.fs.s3a.endpoint.region"] = region
    if (key := get("key")) and (secret := get("secret")):
        conf["spark.hadoop.fs.s3a.access.key"] = key
        conf["spark.hadoop.fs.s3a.secret.key"] = secret
    for field, names in _ENV.items():
        if value := get(field):
            for name in names:
                conf[f"spark.executorEnv.{name}"] = value
    return conf


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


def unmark_complete(path: str) -> None:
    """Remove the _SUCCESS marker of an output whose parts are about to change."""
    fs, p = fs_for(path)
    marker = f"{p.rstrip('/')}/{SUCCESS}"
    if fs.exists(marker):
        fs.rm(marker)


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
        _move(fs_t, tp, p)
    except BaseException:
        remove(tmp)
        raise


def _move(fs: fsspec.AbstractFileSystem, src: str, dst: str) -> None:
    """Rename ``src`` to ``dst``. Object stores have no folders to rename (and fsspec's recursive
    mv trips over the folder's own pseudo-key on S3), so there a folder's files move one by one."""
    if "file" not in fs.protocol and fs.isdir(src):
        files = fs.find(src)
        fs.copy(files, [dst + f[len(src):] for f in files])
        fs.rm(src, recursive=True)
    else:
        fs.mv(src, dst, recursive=True)


def clean_temporaries(folder: str, name: str = "") -> int:
    """Remove leftovers of killed attempts (``*.tmp-*``, or only ``<name>.tmp-*``) in a folder; returns how many."""
    fs, p = fs_for(folder)
    if not fs.exists(p):
        return 0
    n = 0
    for entry in fs.ls(p, detail=False):
        base = entry.rsplit("/", 1)[-1]
        if base.startswith(f"{name}.tmp-") if name else ".tmp-" in base:
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
    """A JSON file; a damaged one (empty, cut, not JSON) is a one-line error naming it."""
    fs, p = fs_for(path)
    with fs.open(p, "r") as f:
        try:
            return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputFileError(path, NOT_FORMAT, f"not valid JSON ({e})", "JSON file") from None
