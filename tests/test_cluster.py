"""The jobs on a real Spark standalone cluster (a master and two workers on 127.0.0.1, started with
pyspark's own spark-class, submitted to with spark-submit): the output equals the local[*] run's,
also when a worker dies in the middle of the job (Spark retries the lost tasks elsewhere; our
outputs are idempotent, so nothing is lost or written twice)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.cluster import REPO, SparkCluster, kill_group, spark_submit

pytestmark = pytest.mark.slow

# --- What the cluster tests run: only this block changes to test another job ---------------
JOB = REPO / "jobs" / "extract.py"
# The run config overrides every submitted job gets: executors sized to the test workers (the
# config's spark.executor_memory would otherwise override spark-submit's and outgrow a 1 GiB worker).
SPARK_SET = ["--set", "spark.executor_memory=512m", "--set", "spark.driver_memory=512m",
             "--set", "spark.shuffle_partitions=4"]


@pytest.fixture(scope="module")
def job_inputs(shared_data) -> list[str]:
    """Several real web archives and a URL list: one Spark task each, spread over both workers."""
    warc = shared_data / "warc"
    names = ["resiliparse_warcfile.warc.gz", "npmwarc_CC-MAIN-2014-35.warc", "npmwarc_CC-MAIN-2014-35.warc.wat",
             "cc_whirlwind.warc.gz", "ukwa_wikipedia-mona-lisa.warc.gz", "pycommoncrawl_file1.warc.wat.gz"]
    files = [str(warc / n) for n in names] + [str(shared_data / "captions" / "laion400m_sample_10000.parquet")]
    return [f for f in files if Path(f).exists()]


def job_args(inputs: list[str], out_dir: Path) -> list[str]:
    return ["--output-dir", str(out_dir), *SPARK_SET, "--set", "extract.caption_col=TEXT", "--set", "extract.url_col=URL",
            *inputs]


def job_output(out_dir: Path):
    """The job's result as a comparable table (rows sorted by uid)."""
    import pyarrow.parquet as pq

    files = sorted((out_dir / "candidates").glob("*.parquet"))
    df = pq.ParquetDataset(files).read().to_pandas()
    return df.sort_values("uid").reset_index(drop=True)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with SparkCluster(tmp_path_factory.mktemp("spark-cluster"), n_workers=2, cores=1, memory="1g") as c:
        yield c


@pytest.fixture(scope="module")
def local_output(job_inputs, tmp_path_factory):
    """The reference: the same job under spark-submit on local[2]."""
    out = tmp_path_factory.mktemp("local-run")
    spark_submit(JOB, job_args(job_inputs, out), master="local[2]", timeout=300)
    return job_output(out)


def _assert_same(got, want) -> None:
    import pandas.testing as pdt

    assert len(want) > 0
    assert list(got["uid"]) == list(want["uid"])
    pdt.assert_frame_equal(got, want)


def test_cluster_run_equals_local_run(cluster, job_inputs, local_output, tmp_path):
    assert cluster.alive_workers() == 2
    cluster.submit(JOB, job_args(job_inputs, tmp_path), timeout=300)
    _assert_same(job_output(tmp_path), local_output)
    apps = cluster.master_state().get("completedapps", [])
    assert apps, "the job did not run on the standalone master"


def test_killed_worker_mid_job_gives_same_output(cluster, job_inputs, local_output, tmp_path):
    if cluster.alive_workers() < 2:  # an earlier test left the cluster short: bring it back
        cluster.start_worker(0)
        cluster.wait_for_workers(2)
    proc = cluster.submit_async(JOB, job_args(job_inputs, tmp_path))
    try:
        deadline = time.monotonic() + 240
        while not cluster.worker_python_started(0):  # worker 0 is running our Python tasks now
            assert proc.poll() is None, f"job ended before worker 0 ran a task:\n{cluster.log_tail('submit')}"
            assert time.monotonic() < deadline, "worker 0 never started a task"
            time.sleep(0.05)
        cluster.kill_worker(0)
        assert proc.poll() is None, "the job had already finished when the worker was killed"
        proc.wait(timeout=300)
    finally:
        kill_group(proc)  # the driver and its Python workers, whatever happened
    assert proc.returncode == 0, f"job failed after losing a worker:\n{cluster.log_tail('submit', 80)}"
    _assert_same(job_output(tmp_path), local_output)
    assert cluster.alive_workers() == 1
    assert not list(tmp_path.glob("*.tmp-*")), "a killed attempt's temporary output was left behind"
