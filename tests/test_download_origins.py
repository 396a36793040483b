"""The job's origins (for its robots table): a small job lists them on the driver, a large one with a
Spark job; both give the same list."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import download
from pipeline.shard_plan import plan_shards


def test_driver_and_spark_list_the_same_origins(spark, tmp_path, monkeypatch):
    urls = [f"http://h{i % 7}.example.com/{i}.jpg" for i in range(40)] + [
        "https://H1.Example.com:8443/x.jpg", "http://[::1]:81/a", "ftp://files.example.com/a", "not a url",
        None, "http://bücher.example/b.jpg", "https://h2.example.com/", "http://h0.example.com:80/y"]
    pq.write_table(pa.table({"url": urls, "text": ["x"] * len(urls)}), tmp_path / "in.parquet", row_group_size=9)
    _, specs = plan_shards(str(tmp_path / "in.parquet"), 10)
    assert len(specs) == 5
    on_driver = download.job_origins(spark.sparkContext, specs)
    monkeypatch.setattr(download, "DRIVER_ORIGINS_MAX_ROWS", 0)
    by_spark = download.job_origins(spark.sparkContext, specs)
    assert on_driver == sorted(by_spark)
    assert "http://h3.example.com" in on_driver and not any(o.startswith("ftp") for o in on_driver)
