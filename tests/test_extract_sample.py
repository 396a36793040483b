"""`wit extract` on the built-in sample web: the pairs equal the generator's ground truth, WARC and WAT."""

from __future__ import annotations

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.extract import run_extract
from schemas import CANDIDATES, conform


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """A run folder whose sample/ holds a small sample web (the default input of extract)."""
    from pipeline.sample_web import generate_sample_web

    root = tmp_path_factory.mktemp("extract_sample")
    generate_sample_web(str(root / "sample"), n_pairs=300, seed=0)
    return root


def _truth(root, url_col: str) -> set[tuple[str, str]]:
    gt = pq.read_table(root / "sample/ground_truth.parquet").to_pylist()
    return {(r[url_col], r["text"]) for r in gt if r["text"] != "" and r[url_col] is not None}


@pytest.mark.parametrize("source,url_col", [("warc", "url"), ("wat", "wat_url")])
def test_sample_pairs_equal_ground_truth(spark, sample_run, source, url_col):
    cfg = load_config(overrides={"output_dir": str(sample_run), "extract.sample_source": source})
    out = sample_run / f"candidates_{source}"
    stats = run_extract(cfg, spark, output=str(out))  # default input: <output_dir>/sample/crawl.*
    table = conform(ds.dataset(str(out), format="parquet", exclude_invalid_files=True).to_table(), CANDIDATES)
    got = set(zip(table.column("url").to_pylist(), table.column("text").to_pylist()))
    assert got == _truth(sample_run, url_col)
    assert table.num_rows == len(got)  # (url, text) unique
    assert stats["output_rows"] == len(got) and not stats["extra"]["errors"]
    assert stats["input_rows"] == stats["output_rows"] + sum(stats["drops"].values())
    # text_source agrees with the generator's (alt, or title when alt is missing/empty)
    gt = {(r[url_col], r["text"]): r["text_source"] for r in pq.read_table(sample_run / "sample/ground_truth.parquet").to_pylist()
          if r["text"] and r[url_col]}
    assert {(u, t): s for u, t, s in zip(*(table.column(c).to_pylist() for c in ("url", "text", "text_source")))} == gt
