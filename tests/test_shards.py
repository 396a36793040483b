"""pipeline.shards.iter_tar reads what Python's tarfile writes (ustar, GNU, pax; long and non-ASCII
names, directories, links, empty and big members) as tarfile reads it, and a cut or damaged tar
ends with the samples before the damage."""

from __future__ import annotations

import io
import tarfile

import pytest

from pipeline.shards import iter_tar


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
