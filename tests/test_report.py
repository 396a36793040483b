"""The report's parts that read shards directly: a damaged shard costs a warning, never the report."""

from __future__ import annotations

import io
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.config import RunConfig
from pipeline.report import grid_section


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, "JPEG")
    return buf.getvalue()


def test_sample_grid_keeps_the_samples_before_a_cut_in_a_shard(tmp_path, capsys):
    cfg = RunConfig(output_dir=str(tmp_path / "out"))
    shards = tmp_path / "out" / "shards"
    shards.mkdir(parents=True)
    keys = ["000000000", "000000001", "000000002"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for i, key in enumerate(keys):
            for ext, data in (("jpg", _jpeg((80 * i, 60, 200))), ("txt", f"caption {i}".encode())):
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    data = buf.getvalue()
    cut = data.index(keys[2].encode()) + 700  # inside the third sample's JPEG
    (shards / "00000.tar").write_bytes(data[:cut])
    pq.write_table(pa.table({"key": keys, "uid": [f"u{i}" for i in range(3)], "text": [f"caption {i}" for i in range(3)],
                             "status": ["success"] * 3}), shards / "00000.parquet")
    capsys.readouterr()
    html = grid_section(cfg)
    assert html.count('class="card') == 2  # the whole samples before the cut; the cut one has no image
    assert "caption 0" in html and "caption 1" in html and "caption 2" not in html
    err = capsys.readouterr().err
    assert "00000.tar ended early (EOFError" in err
