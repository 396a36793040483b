"""Shards (img2dataset's webdataset layout): the one naming rule, listing, reading a tar's samples.

The naming rule, used by download, score, select and the report: the shards of a set of
``n_shards`` are named by their number zero-padded to ``shard_digits(n_shards)`` digits, five or
more (img2dataset's rule: 400M pairs in 1,000-sample shards have 6-digit names). One width per
folder, so names sort in shard order. Whatever belongs to a shard (its metadata, stats, scores) is
named after the shard's own file name (``name_of``), never re-derived with an assumed width.

No torch here, so Spark workers that only move bytes stay light.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator

from pipeline import log, storage
from pipeline.errors import TarFormatError, UserError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


MIN_DIGITS = 5


def shard_digits(n_shards: int) -> int:
    """Digits in the names of a set of ``n_shards`` shards: enough for the last one, at least 5."""
    return max(MIN_DIGITS, len(str(max(n_shards - 1, 0))))


def shard_name(shard: int, n_shards: int) -> str:
    """The name of shard ``shard`` of ``n_shards`` (``00042``; ``000042`` in a set of 100,001)."""
    if not 0 <= shard < max(n_shards, 1):
        raise ValueError(f"shard {shard} is not in a set of {n_shards}")
    return f"{shard:0{shard_digits(n_shards)}d}"


def shard_name_column(shard, n_shards: int):
    """``shard_name`` as a Spark column expression, for a Spark column of shard numbers."""
    from pyspark.sql import functions as F

    return F.lpad(shard.cast("string"), shard_digits(n_shards), "0")


def index_digits(shard_size: int, minimum: int = 0) -> int:
    """Digits of a sample's index in its key: enough for ``shard_size - 1`` (none when shards hold
    one sample, as img2dataset's keys), at least ``minimum``."""
    return max(minimum, len(str(shard_size - 1)) if shard_size > 1 else 0)


def sample_key(shard: int, index: int, n_shards: int, shard_size: int) -> str:
    """A download sample's key: its shard's name, then its index in the shard (img2dataset's
    ``compute_key``, which a test checks this against)."""
    digits = index_digits(shard_size)
    return shard_name(shard, n_shards) + (f"{index:0{digits}d}" if digits else "")


def name_of(path: str) -> str:
    """A shard's name from the path of one of its files (``.../000042.tar``, ``000042_stats.json``
    → ``000042``): the digits its file name starts with."""
    base = path.rstrip("/").rsplit("/", 1)[-1]
    return base[: len(base) - len(base.lstrip("0123456789"))]


def list_shards(folder: str) -> list[tuple[int, str]]:
    """(shard number, tar path) of every shard tar (``<digits>.tar``) in a folder, in shard order."""
    fs, p = storage.fs_for(folder)
    if not fs.exists(p):
        raise UserError(f"shards folder not found: {folder} (run `wit download` first)")
    out = []
    for name in fs.ls(p, detail=False):
        base = name.rsplit("/", 1)[-1]
        stem = base[: -len(".tar")]
        if base.endswith(".tar") and stem.isdigit():
            out.append((int(stem), f"{folder.rstrip('/')}/{base}"))
    out.sort()
    widths = {len(name_of(t)) for _, t in out}
    if len(widths) > 1:  # two runs' shards in one folder: their keys and names would clash
        raise UserError(f"{folder} holds shards named with {' and '.join(map(str, sorted(widths)))} digits: "
                        "shards of different downloads; use one folder per download")
    return out


_BLOCK = 512


def _tar_number(field: bytes) -> int:
    """A header's numeric field: octal text, or GNU base-256 for big values."""
    if field[:1] in (b"\x80", b"\xff"):
        n = int.from_bytes(field[1:], "big")
        return n - (1 << (8 * (len(field) - 1))) if field[:1] == b"\xff" else n
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarFormatError(f"bad number {field!r} in a tar header") from None


def _pax_records(data: bytes) -> dict[str, str]:
    """A pax extended header's ``"<length> <key>=<value>\\n"`` records."""
    out, i = {}, 0
    try:
        while i < len(data) and data[i:i + 1] != b"\0":
            space = data.index(b" ", i)
            length = int(data[i:space])
            if length <= space - i:
                raise ValueError(length)
            key, _, value = data[space + 1:i + length - 1].partition(b"=")
            out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
            i += length
        if "size" in out:
            int(out["size"])
    except ValueError:
        raise TarFormatError("bad pax extended header") from None
    return out


def tar_members(f) -> Iterator[tuple[str, bool, int]]:
    """(name, is a regular file, size) per member of an uncompressed tar, leaving ``f`` at the
    member's data, which the caller reads or skips (``size`` rounded up to 512 bytes) before the next.

    Why not tarfile: it took ~65 of the ~120 µs a scoring loader worker spent per sample; this takes
    ~20 and reads the same formats (ustar, GNU long names, pax), with checksums checked.
    A truncated tar raises EOFError; a damaged header, TarFormatError.
    """
    long_name, pax = None, {}
    while True:
        header = f.read(_BLOCK)
        if len(header) < _BLOCK:
            if header.strip(b"\0"):
                raise EOFError("tar header cut off")
            return
        if not header.strip(b"\0"):  # end-of-archive marker
            return
        checksum = _tar_number(header[148:156])
        unsigned = sum(header[:148]) + sum(header[156:]) + 8 * 32  # the checksum field counts as spaces
        if checksum != unsigned and checksum != unsigned - 256 * sum(1 for b in header if b > 127):  # signed sum
            raise TarFormatError("bad tar header checksum")
        kind, size = header[156:157], _tar_number(header[124:136])
        size = int(pax.get("size", size))
        if size < 0:
            raise TarFormatError(f"negative member size {size} in a tar header")
        if kind in (b"L", b"x", b"g"):  # metadata of the next member (or of all, "g": not needed here)
            padded = -(-size // _BLOCK) * _BLOCK
            data = f.read(padded)
            if len(data) < size:
                raise EOFError("tar extended header cut off")
            if kind == b"L":
                long_name = data[:size].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif kind == b"x":
                pax = _pax_records(data[:size])
            continue
        name = long_name or pax.get("path")
        if name is None:
            name_b = header[:100].split(b"\0", 1)[0]
            prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
            name = (prefix + b"/" + name_b if prefix else name_b).decode("utf-8", "surrogateescape")
        long_name, pax = None, {}
        yield name, kind in (b"0", b"\0", b"7"), size


def iter_tar(fileobj, keep=lambda index: True) -> Iterator[tuple[int, str, dict[str, bytes]]]:
    """(index, key, {ext: bytes}) per sample of a webdataset tar (members grouped by key).

    Members of samples with ``keep(index)`` false are skipped without reading their data, so
    several workers can share one tar cheaply. A truncated or damaged tar ends the iteration with a
    warning, not the job.
    """
    index, key, sample = -1, None, {}
    seekable = fileobj.seekable()
    try:
        for name, is_file, size in tar_members(fileobj):
            padded = -(-size // _BLOCK) * _BLOCK
            base = name.rsplit("/", 1)[-1]
            k, _, ext = base.partition(".")
            if is_file and k != key:
                if key is not None and sample is not None:
                    yield index, key, sample
                index, key = index + 1, k
                sample = {} if keep(index) else None
            if is_file and sample is not None:
                data = fileobj.read(padded)
                if len(data) < size:
                    raise EOFError(f"tar member {name} cut off")
                sample[ext.lower()] = data[:size]
            elif seekable:
                fileobj.seek(padded, 1)
            else:
                fileobj.read(padded)
    except (TarFormatError, EOFError, OSError) as e:
        name = getattr(fileobj, "path", None) or getattr(fileobj, "name", None)
        where = f"tar {name}" if isinstance(name, str) else "tar"
        log.warn(f"{where} ended early ({type(e).__name__}: {e}); keeping the samples read so far")
    if key is not None and sample is not None:
        yield index, key, sample


def sample_json(sample: dict[str, bytes]) -> dict:
    """A sample's ``key.json`` metadata as a dict ({} when absent or not valid JSON)."""
    try:
        meta = json.loads(sample["json"]) if "json" in sample else {}
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


# --- writing ------------------------------------------------------------------------------------


def member_order(ext: str) -> tuple:
    """A sample's members in the tar: the image first, then txt, then json (open_clip reads any order)."""
    return (ext == "json", ext == "txt", ext)


class SampleTarWriter:
    """Writes samples (``key`` + {ext: bytes}) as a plain ustar tar: one 512-byte header per member,
    mode 0644, mtime 0, so the same samples give the same bytes. webdataset's TarWriter stamps each
    member with a float time, which tarfile can only store in an extra pax record: 1 KiB more per
    member (a third of a small shard) and the CPU to build it, in the download's writer thread.

    The bytes are tarfile's (``tarfile.open(mode="w", format=USTAR_FORMAT)`` + ``addfile``, a test
    compares them), but a header with a short name is built here from a template: tarfile's
    TarInfo copy, field formatting and member list cost 0.1 ms a sample in the download's writer."""

    def __init__(self, fileobj):
        self._fd = fileobj
        self._offset = fileobj.tell()  # tarfile pads the end to a record counted from here
        self._closed = False

    def write(self, key: str, members: dict[str, bytes]) -> None:
        for ext in sorted(members, key=member_order):
            data = members[ext]
            self._fd.write(_ustar_header(f"{key}.{ext}", len(data)))
            self._fd.write(data)
            blocks, rest = divmod(len(data), tarfile.BLOCKSIZE)
            if rest:
                self._fd.write(tarfile.NUL * (tarfile.BLOCKSIZE - rest))
                blocks += 1
            self._offset += (blocks + 1) * tarfile.BLOCKSIZE

    def close(self) -> None:
        """The two end blocks, then zeros to a whole record (tarfile's close; again: nothing); the file
        object stays the caller's."""
        if self._closed:
            return
        self._closed = True
        self._fd.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        self._offset += 2 * tarfile.BLOCKSIZE
        rest = self._offset % tarfile.RECORDSIZE
        if rest:
            self._fd.write(tarfile.NUL * (tarfile.RECORDSIZE - rest))
        self._offset += (tarfile.RECORDSIZE - rest) % tarfile.RECORDSIZE

    def __enter__(self) -> SampleTarWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# A ustar header of a regular file (mode 0644, uid/gid/mtime 0, no names of owners) as tarfile writes it,
# split around the name (100 bytes) and the size (12); the checksum field holds spaces until it is summed.
_HEADER_MODE_IDS = b"0000644\0" + b"0000000\0" * 2
_HEADER_TAIL = (b"00000000000\0" + b" " * 8 + tarfile.REGTYPE + bytes(100) + tarfile.POSIX_MAGIC
                + bytes(32 + 32 + 8 + 8 + 155 + 12))
_MAX_OCTAL_SIZE = 8 ** 11  # 11 octal digits: a larger member needs tarfile (which refuses it in ustar)


def _ustar_header(name: str, size: int) -> bytes:
    """tarfile's USTAR header of a regular member ``name`` of ``size`` bytes (mode 0644, mtime 0)."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > tarfile.LENGTH_NAME or size >= _MAX_OCTAL_SIZE:  # a prefix split, or an error: tarfile's own
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, 0
        return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
    head = raw + bytes(tarfile.LENGTH_NAME - len(raw)) + _HEADER_MODE_IDS + b"%011o\0" % size + _HEADER_TAIL
    return head[:148] + b"%06o\0" % sum(head) + head[155:]
