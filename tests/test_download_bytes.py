"""Download's writer builds the tar headers by hand for speed (pipeline.shards.SampleTarWriter); the bytes
must be tarfile's own USTAR archive, compared here on random samples."""

from __future__ import annotations

import io
import random
import tarfile

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
