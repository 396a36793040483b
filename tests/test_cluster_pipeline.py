"""The whole pipeline (jobs/run.py) on a real standalone Spark cluster on 127.0.0.1, with a worker
killed in the middle of the download stage: the final manifest equals a local[2] run's."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.cluster import REPO, SparkCluster, kill_group, spark_submit
from tests.conftest import query_sources, served_sample_web

pytestmark = pytest.mark.slow

JOB = REPO / "jobs" / "run.py"
SPARK_SET = ["--set", "spark.executor_memory=512m", "--set", "spark.driver_memory=1g", "--set", "spark.shuffle_partitions=4"]


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """A 200-pair sample web served on 127.0.0.1 for the whole module."""
    with served_sample_web(tmp_path_factory.mktemp("cluster-web"), n_pairs=200, seed=5) as (sample, server):
        yield sample, server


def _config(tmp: Path, sample: Path, server) -> Path:
    cfg = {
        "output_dir": str(tmp / "out"),
        "extract": {"inputs": [str(sample / "crawl.warc.gz")]},
        "queries": {"sources": query_sources()},
        "balance": {"t": 50},
        "download": {"allow_hosts": [f"127.0.0.1:{server.port}"], "shard_size": 30, "threads": 8, "timeout_s": 3.0},
        "score": {"model": "wit-tiny", "batch_size": 32, "num_workers": 0},
        "select": {"top_fraction": 0.5, "shard_size": 30},
    }
    (tmp / "run.yaml").write_text(yaml.safe_dump(cfg))
    return tmp / "run.yaml"


def _args(config: Path) -> list[str]:
    return ["-c", str(config), "--to", "select", *SPARK_SET]


def _result(tmp: Path) -> tuple[list[str], list[str]]:
    """(final manifest uids in order, every uid the downloader wrote, sorted)."""
    out = tmp / "out"
    manifest = pq.read_table(out / "final" / "manifest.parquet", columns=["uid"]).column("uid").to_pylist()
    shards = sorted((out / "shards").glob("[0-9]*.parquet"))
    tried = sorted(u for f in shards for u in pq.read_table(f, columns=["uid"]).column("uid").to_pylist())
    return manifest, tried


def test_pipeline_on_cluster_with_a_worker_killed_during_download(web, tmp_path_factory):
    sample, server = web
    local = tmp_path_factory.mktemp("pipeline-local")
    spark_submit(JOB, _args(_config(local, sample, server)), master="local[2]", timeout=600)
    want_manifest, want_tried = _result(local)
    assert want_manifest and len(set(want_tried)) == len(want_tried)

    remote = tmp_path_factory.mktemp("pipeline-cluster")
    config = _config(remote, sample, server)
    with SparkCluster(tmp_path_factory.mktemp("spark-cluster-pipeline"), n_workers=2, cores=1, memory="1g") as cluster:
        proc = cluster.submit_async(JOB, _args(config))
        shards = remote / "out" / "shards"
        try:
            deadline = time.monotonic() + 480
            while not (shards.exists() and any(shards.glob("_tmp/*")) or any(shards.glob("[0-9]*.parquet"))):
                assert proc.poll() is None, f"job ended before the download stage:\n{cluster.log_tail('submit', 60)}"
                assert time.monotonic() < deadline, "the download stage never started"
                time.sleep(0.05)
            assert not (shards / "_SUCCESS").exists()
            cluster.kill_worker(0)
            proc.wait(timeout=600)
        finally:
            kill_group(proc)
        assert proc.returncode == 0, f"the pipeline failed after losing a worker:\n{cluster.log_tail('submit', 80)}"
        assert cluster.alive_workers() == 1
        assert cluster.master_state().get("completedapps"), "the job did not run on the standalone master"
    got_manifest, got_tried = _result(remote)
    assert got_tried == want_tried, "a sample was lost or written twice"
    assert got_manifest == want_manifest
