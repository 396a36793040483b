"""Input discovery and opening: globs, folders and paths files to a file list; the format of a
file; binary streams for local paths and fsspec URLs; gzip line reading that keeps what precedes a cut."""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator

from pipeline import storage
from pipeline.errors import UserError
from pipeline.extract.sink import FileStats

FORMATS = ("wat", "warc", "parquet", "csv", "tsv", "jsonl")


def open_binary(path: str):
    """A binary file object for a local path or any fsspec URL."""
    if "://" not in path or path.startswith("file://"):
        return open(path.removeprefix("file://"), "rb")
    fs, p = storage.fs_for(path)
    return fs.open(p, "rb")


def maybe_gunzip(f):
    """``f`` itself, or a gzip reader over it when it starts with the gzip magic (URL lists, paths files)."""
    head = f.read(2)
    f.seek(0)
    return gzip.GzipFile(fileobj=f, mode="rb") if head == b"\x1f\x8b" else f


def read_lines(f, st: FileStats, chunk_size: int = 1 << 16) -> Iterator[bytes]:
    """Lines (with their ends) of a plain or gzip (multi-member) stream, keeping all data before a cut.

    Unlike GzipFile, a gzip stream cut short or corrupted part-way yields everything that could be
    decompressed, then counts ``truncated_gzip`` / ``bad_gzip``.
    """
    first = f.read(chunk_size)
    gz = first[:2] == b"\x1f\x8b"

    def chunks() -> Iterator[bytes]:
        chunk = first
        if not gz:
            while chunk:
                yield chunk
                chunk = f.read(chunk_size)
            return
        d, fed = zlib.decompressobj(31), False
        while chunk:
            try:
                while chunk:
                    fed = True
                    out = d.decompress(chunk)
                    if out:
                        yield out
                    if not d.eof:
                        break
                    chunk = d.unused_data  # the next gzip member (CC: one per record)
                    d, fed = zlib.decompressobj(31), False
                    if chunk and chunk[:2] != b"\x1f\x8b":
                        if chunk.strip(b"\x00"):
                            st.error("bad_gzip", "data after the last gzip member")
                        return
            except zlib.error as e:
                st.error("bad_gzip", str(e))
                return
            chunk = f.read(chunk_size)
        if fed and not d.eof:
            tail = d.flush()
            if tail:
                yield tail
            st.error("truncated_gzip", "the gzip stream ends inside a member")

    rest = b""
    for chunk in chunks():
        buf = io.BytesIO(rest + chunk if rest else chunk)
        rest = b""
        for line in buf:
            if line.endswith(b"\n"):
                yield line
            else:
                rest = line
    if rest:
        yield rest


def detect_format(path: str, wanted: str = "auto") -> str:
    """The input format from the name (…wat.gz, .warc, .parquet, …), else from the first bytes."""
    if wanted != "auto":
        return wanted
    name = path.lower().rsplit("/", 1)[-1]
    for suffix in (".gz", ".bz2", ".zst", ".xz"):
        name = name.removesuffix(suffix)
    if ".wat" in name:
        return "wat"
    if name.endswith((".warc", ".arc")) or ".warc." in name:
        return "warc"
    for ext, fmt in ((".parquet", "parquet"), (".csv", "csv"), (".tsv", "tsv"), (".jsonl", "jsonl"),
                     (".ndjson", "jsonl"), (".json", "jsonl")):
        if name.endswith(ext):
            return fmt
    try:
        with open_binary(path) as raw:
            head = maybe_gunzip(raw).read(65536)
    except (OSError, EOFError, zlib.error):
        return "unknown"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"WARC/"):
        return "wat" if b'"Envelope"' in head else "warc"
    return "unknown"


def _read_paths_file(path: str, prefix: str) -> list[str]:
    with open_binary(path) as raw:
        f = maybe_gunzip(raw)
        lines = [ln.decode("utf-8").strip() for ln in f]
    folder = path.rsplit("/", 1)[0] if "/" in path else "."
    out = []
    for ln in lines:
        if not ln or ln.startswith("#"):
            continue
        if prefix:
            out.append(prefix.rstrip("/") + "/" + ln.lstrip("/"))
        elif "://" in ln or ln.startswith("/"):
            out.append(ln)
        else:
            out.append(f"{folder}/{ln}")
    return out


def resolve_inputs(inputs: list[str], path_prefix: str = "") -> list[str]:
    """Expand globs, folders and paths files (CC's ``wat.paths.gz``) into a sorted file list."""
    files: list[str] = []
    for item in inputs:
        name = item.rstrip("/").rsplit("/", 1)[-1]
        if name.endswith((".paths", ".paths.gz", ".txt")) and not any(ch in item for ch in "*?["):
            storage.require_exists(item, "paths file")
            files.extend(_read_paths_file(item, path_prefix))
            continue
        if item.startswith(("http://", "https://")):
            files.append(item)
            continue
        import fsspec

        fs, p = fsspec.core.url_to_fs(item, **storage.storage_options(item))  # fs_for would expand the glob
        proto = item.split("://", 1)[0] + "://" if "://" in item else ""
        if any(ch in item for ch in "*?["):
            found = sorted(fs.glob(p))
            if not found:
                raise UserError(f"no input files match {item}")
        elif fs.isdir(p):
            found = sorted(x for x in fs.find(p) if not x.rsplit("/", 1)[-1].startswith(("_", ".")))
            if not found:
                raise UserError(f"input folder is empty: {item}")
        elif fs.exists(p):
            found = [p]
        else:
            raise UserError(f"input not found: {item}")
        files.extend(x if not proto or x.startswith(proto) else proto + x for x in found)
    # keep order, drop repeats
    return list(dict.fromkeys(files))


def sample_crawl(cfg) -> str:
    """The sample web's crawl (WARC or WAT, config extract.sample_source)."""
    name = "crawl.warc.wat.gz" if cfg.extract.sample_source == "wat" else "crawl.warc.gz"
    return f"{cfg.path('sample').rstrip('/')}/{name}"


def default_inputs(cfg) -> list[str]:
    """What extract reads when no input is given: config extract.inputs, else our own crawl's WARC when the
    run crawls (crawl.seeds), else the sample crawl."""
    if cfg.extract.inputs:
        return list(cfg.extract.inputs)
    if cfg.crawl.seeds:
        return [f"{cfg.path('crawl')}/warc/*.warc.gz"]
    return [sample_crawl(cfg)]
