"""Download's writer builds two things by hand for speed: the tar headers (pipeline.shards.SampleTarWriter)
and each sample's JSON (pipeline.download.sample_json). Their bytes must be the libraries' own: tarfile's
USTAR archive and ``json.dumps(..., indent=4)``, compared here on random samples and rows."""

from __future__ import annotations

import io
import json
import math
import random
import tarfile

import pytest

from pipeline.download import sample_json
from pipeline.shards import SampleTarWriter, iter_tar, member_order


def _tarfile_bytes(samples, lead: bytes) -> bytes | str:
    buf = io.BytesIO(lead)
    buf.seek(len(lead))
    try:
        tar = tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT)
        for key, members in samples:
            for ext in sorted(members, key=member_order):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mode, info.mtime = len(members[ext]), 0o644, 0
                tar.addfile(info, io.BytesIO(members[ext]))
        tar.close()
    except ValueError as e:  # a name ustar cannot hold
        return repr(e)
    return buf.getvalue()


def _writer_bytes(samples, lead: bytes) -> bytes | str:
    buf = io.BytesIO(lead)
    buf.seek(len(lead))
    try:
        with SampleTarWriter(buf) as tar:
            for key, members in samples:
                tar.write(key, members)
    except ValueError as e:
        return repr(e)
    return buf.getvalue()


def _random_key(rng: random.Random, i: int) -> str:
    return rng.choice([f"{i:09d}", f"{i:05d}", "é" * rng.randint(1, 60), "x" * rng.randint(90, 140),
                       "dir/" * rng.randint(1, 40) + "k", "bad\udcff"])


def test_sample_tar_writer_writes_tarfiles_bytes():
    rng = random.Random(0)
    for _ in range(200):
        samples = [(_random_key(rng, i), {ext: rng.randbytes(rng.choice([0, 1, 511, 512, 513, 1024, 3000]))
                                          for ext in rng.sample(["jpg", "txt", "json", "webp"], rng.randint(1, 3))})
                   for i in range(rng.randint(0, 25))]
        lead = b"z" * rng.choice([0, 0, 7, 512])  # tarfile pads the end to a record counted from the start offset
        assert _writer_bytes(samples, lead) == _tarfile_bytes(samples, lead)


def test_sample_tar_writer_output_reads_back():
    buf = io.BytesIO()
    with SampleTarWriter(buf) as tar:
        tar.write("000000001", {"jpg": b"\xff\xd8" + bytes(700), "txt": b"a caption", "json": b"{}"})
    buf.seek(0)
    assert [(key, sorted(sample)) for _, key, sample in iter_tar(buf)] == [("000000001", ["jpg", "json", "txt"])]
    assert len(buf.getvalue()) % tarfile.RECORDSIZE == 0
    size = len(buf.getvalue())
    tar.close()  # closing again writes nothing (as tarfile's close)
    assert len(buf.getvalue()) == size


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(11)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-10**20, 10**20)
    if kind == 3:
        return rng.choice([0.0, -0.0, 1e300, 1.5, math.nan, math.inf, -math.inf, rng.random(), 1e-7])
    if kind == 4:
        return "".join(rng.choice(["a", "é", "\n", '"', "\\", "\u2028", "\ud800", "😀", "/", "\x00"])
                       for _ in range(rng.randint(0, 8)))
    if kind == 5:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))] if depth < 2 else 1
    if kind == 6:
        return {"x": _random_value(rng, depth + 1)} if depth < 2 else 2
    if kind == 7:
        return b"binary: left out"
    if kind == 8:
        return (1, 2)
    if kind == 9:
        return [rng.randint(0, 255) for _ in range(12)]  # a colour grid
    return rng.choice([{}, [], "", "x", 3])


def test_sample_json_is_json_dumps_indent_4():
    rng = random.Random(1)
    for _ in range(5000):
        meta = {(f"k{i}" if rng.random() > 0.02 else rng.choice([1, None, 2.5, True])): _random_value(rng)
                for i in range(rng.randint(0, 18))}
        assert _outcome(sample_json, meta) == _outcome(
            lambda m: json.dumps({k: v for k, v in m.items() if not isinstance(v, bytes)}, indent=4).encode(), meta)


def _outcome(encode, meta):
    """The bytes, or the error (bytes nested in a list are refused by both)."""
    try:
        return encode(meta)
    except (TypeError, ValueError) as e:
        return repr(e)


def test_sample_json_refuses_what_json_refuses():
    with pytest.raises(TypeError):
        sample_json({"when": object()})
