"""pipeline.shards: the one shard naming rule (names and keys, past 100,000 shards too) and the
listing built on it; iter_tar reads what Python's tarfile writes (ustar, GNU, pax; long and
non-ASCII names, directories, links, empty and big members) as tarfile reads it, and a cut or
damaged tar ends with the samples before the damage. SampleTarWriter writes plain ustar tars that
webdataset and iter_tar read back, one header per member and the same bytes for the same samples."""

from __future__ import annotations

import io
import tarfile

import pytest

from pipeline.errors import UserError
from pipeline.shards import (
    SampleTarWriter,
    index_digits,
    iter_tar,
    list_shards,
    name_of,
    sample_key,
    shard_digits,
    shard_name,
)

# --- the naming rule ---------------------------------------------------------------------------------


def test_names_widen_past_100000_shards_with_one_width_per_set():
    assert [shard_digits(n) for n in (0, 1, 100_000, 100_001, 1_000_000, 1_000_001)] == [5, 5, 5, 6, 6, 7]
    assert shard_name(0, 1) == "00000" and shard_name(99_999, 100_000) == "99999"
    assert shard_name(100_000, 100_001) == "100000" and shard_name(7, 100_001) == "000007"
    assert shard_name(399_999, 400_000) == "399999"  # 400M pairs in 1,000-sample shards
    names = [shard_name(s, 100_002) for s in (0, 9, 99_999, 100_000, 100_001)]
    assert sorted(names) == names and {len(n) for n in names} == {6}  # names sort in shard order
    with pytest.raises(ValueError):
        shard_name(100_000, 100_000)


@pytest.mark.parametrize("shard_size", [1, 2, 10, 11, 1000, 1001, 10_000])
@pytest.mark.parametrize(("shard", "n_shards"), [(0, 1), (42, 100), (99_999, 100_000), (100_000, 100_001),
                                                  (123_456, 400_000), (7, 100_001)])
def test_sample_keys_are_img2dataset_s(shard, n_shards, shard_size):
    from img2dataset.downloader import compute_key

    for index in {0, shard_size // 2, shard_size - 1}:
        assert sample_key(shard, index, n_shards, shard_size) == compute_key(
            index, shard, index_digits(shard_size), shard_digits(n_shards))
    keys = {sample_key(shard, i, n_shards, shard_size) for i in range(min(shard_size, 50))}
    assert len(keys) == min(shard_size, 50) and all(k.startswith(shard_name(shard, n_shards)) for k in keys)


def test_listing_reads_6_digit_names_in_shard_order(tmp_path):
    names = [shard_name(s, 100_011) for s in (100_010, 3, 99_999, 100_000)]
    for n in names:
        (tmp_path / f"{n}.tar").write_bytes(b"")
        (tmp_path / f"{n}.parquet").write_bytes(b"")
    (tmp_path / "_stats.json").write_text("{}")
    listed = list_shards(str(tmp_path))
    assert [s for s, _ in listed] == [3, 99_999, 100_000, 100_010]
    assert [name_of(t) for _, t in listed] == ["000003", "099999", "100000", "100010"]
    (tmp_path / "00004.tar").write_bytes(b"")  # a shard of another (smaller) download
    with pytest.raises(UserError, match="5 and 6 digits"):
        list_shards(str(tmp_path))
    assert name_of("s3://b/run/shards/100000.tar") == name_of("/x/100000_stats.json") == "100000"


# --- reading tars --------------------------------------------------------------------------------------


def make_tar(fmt, members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
            elif data == "link":
                info.type, info.linkname = tarfile.SYMTYPE, "elsewhere/" + "x" * 120
            else:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if isinstance(data, bytes) else None)
    return buf.getvalue()


def reference(data: bytes) -> list:
    """The same grouping done with tarfile."""
    out, key = [], None
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf:
            if not m.isfile():
                continue
            k, _, ext = m.name.rsplit("/", 1)[-1].partition(".")
            if k != key:
                out.append((len(out), k, {}))
                key = k
            out[-1][2][ext.lower()] = tf.extractfile(m).read()
    return out


class Stream(io.RawIOBase):
    """A file that cannot seek (an HTTP body, a pipe)."""

    def __init__(self, data: bytes):
        self.inner = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, b):
        chunk = self.inner.read(min(len(b), 700))  # short reads too
        b[:len(chunk)] = chunk
        return len(chunk)


MEMBERS = [
    ("000001.jpg", b"\xff\xd8" + bytes(range(256)) * 9), ("000001.txt", "ça marche".encode()), ("000001.json", b"{}"),
    ("folder", None), ("000002.jpg", b""), ("000002.TXT", b"upper-case extension"),
    ("deep/" + "d" * 90 + "/" + "k" * 100 + ".jpg", b"long name" * 100), ("deep/" + "d" * 90 + "/" + "k" * 100 + ".txt", b"t"),
    ("lnk", "link"), ("naïve-ключ.jpg", b"x" * 1_000_000), ("naïve-ключ.txt", b"non-ascii key"),
]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_reads_every_format_as_tarfile_does(fmt):
    ustar_ok = [m for m in MEMBERS if "ключ" not in m[0] and "deep" not in m[0] and m[1] != "link"]  # ustar's limits
    members = MEMBERS if fmt != tarfile.USTAR_FORMAT else ustar_ok
    data = make_tar(fmt, members)
    want = reference(data)
    assert list(iter_tar(io.BytesIO(data))) == want
    assert list(iter_tar(io.BufferedReader(Stream(data)))) == want
    kept = list(iter_tar(io.BytesIO(data), keep=lambda i: i % 2 == 1))
    assert kept == [w for w in want if w[0] % 2 == 1]


def test_cut_or_damaged_tars_keep_the_samples_before(capsys):
    data = make_tar(tarfile.PAX_FORMAT, MEMBERS)
    want = reference(data)
    for cut in range(0, len(data), 997):
        got = list(iter_tar(io.BytesIO(data[:cut])))
        assert len(got) <= len(want)
        for g, w in zip(got[:-1], want, strict=False):  # all but the last are whole
            assert g == w
        if got:  # the last one read may miss members, never hold wrong bytes
            assert all(w_data == want[len(got) - 1][2][ext] for ext, w_data in got[-1][2].items())
    damaged = bytearray(data)
    second = data.index(b"000001.txt")
    damaged[second + 130] ^= 0x55  # inside the size field of the second header: checksum no longer matches
    capsys.readouterr()
    got = list(iter_tar(io.BytesIO(bytes(damaged))))
    assert got == [(0, "000001", {"jpg": want[0][2]["jpg"]})]
    assert "ended early (TarFormatError: bad tar header checksum)" in capsys.readouterr().err


def test_a_damaged_pax_header_ends_the_tar_with_a_warning(capsys):
    data = bytearray(make_tar(tarfile.PAX_FORMAT, [("a.txt", b"first"), ("naïve.txt", b"pax-named")]))
    at = data.index(b"path=")  # the pax record of the second member: "NN path=naïve.txt\n"
    data[at - 3:at - 1] = b"xx"  # its length is no number now
    assert list(iter_tar(io.BytesIO(bytes(data)))) == [(0, "a", {"txt": b"first"})]
    assert "TarFormatError: bad pax extended header" in capsys.readouterr().err


def test_random_damage_never_raises():
    """Whatever bytes a damaged tar holds, reading it ends with the samples it could read."""
    import random

    data = make_tar(tarfile.PAX_FORMAT, MEMBERS)
    rng = random.Random(0)
    for _ in range(300):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(min(len(data), 8192))] = rng.randrange(256)  # headers sit in the first blocks
        got = list(iter_tar(io.BytesIO(bytes(damaged[:rng.randrange(len(data) + 1)]))))
        assert all(isinstance(k, str) and isinstance(s, dict) for _, k, s in got)


# --- writing ------------------------------------------------------------------------------------------


def _written(samples) -> bytes:
    buf = io.BytesIO()
    with SampleTarWriter(buf) as tar:
        for key, members in samples:
            tar.write(key, members)
    return buf.getvalue()


def test_sample_tar_writer_reads_back_with_one_header_per_member(tmp_path):
    import webdataset as wds

    samples = [(f"{i:09d}", {"jpg": bytes([i]) * (100 + i), "txt": f"caption {i} é".encode(), "json": b"{}"})
               for i in range(5)]
    data = _written(samples)
    # 512-byte header + data padded to 512 per member, then the two end blocks (tarfile pads the
    # archive to its 10 KiB record): no pax record anywhere
    members = len(samples) * 3
    assert data.count(b"ustar") == members and b"PaxHeader" not in data
    assert len(data) % tarfile.RECORDSIZE == 0 and len(data) >= members * 1024 + 1024
    got = [(key, sample) for _, key, sample in iter_tar(io.BytesIO(data))]
    assert got == samples
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = tf.getnames()
        assert names[:3] == ["000000000.jpg", "000000000.txt", "000000000.json"]  # image, txt, json
        assert {m.mtime for m in tf.getmembers()} == {0} and {m.mode for m in tf.getmembers()} == {0o644}
    (tmp_path / "00000.tar").write_bytes(data)
    read = list(wds.WebDataset(str(tmp_path / "00000.tar"), shardshuffle=False))
    assert [r["__key__"] for r in read] == [k for k, _ in samples] and read[2]["txt"] == samples[2][1]["txt"]
    assert _written(samples) == data  # the same samples, the same bytes


def test_sample_tar_writer_refuses_a_name_ustar_cannot_hold():
    with pytest.raises(ValueError):
        _written([("k" * 200, {"jpg": b"x"})])
