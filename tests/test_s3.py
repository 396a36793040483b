"""Object storage: our atomic, resumable writes and the stages' own I/O on s3:// against a real
S3-protocol server (moto's standalone server on 127.0.0.1), configured the two ways users do it:
the usual AWS_* environment variables, or the run config's ``storage`` section."""

from __future__ import annotations

import os
import uuid

import pytest

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from pipeline import storage  # noqa: E402
from pipeline.config import StorageConfig, load_config  # noqa: E402
from tests.conftest import free_port  # noqa: E402

AWS_VARS = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE"]


@pytest.fixture(scope="module")
def s3_server():
    """A real S3 endpoint (moto's HTTP server) on a free loopback port, for this module's tests."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def clean_env():
    """Restore the AWS_* environment after the test (``storage.configure`` exports to it)."""
    saved = {k: os.environ.get(k) for k in AWS_VARS}
    for k in AWS_VARS:
        os.environ.pop(k, None)
    os.environ["AWS_CONFIG_FILE"] = os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull  # no ~/.aws
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _new_bucket(endpoint: str) -> str:
    import boto3

    name = f"wit-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def bucket(s3_server, clean_env):
    """A fresh bucket, reached through the usual environment variables."""
    os.environ.update(AWS_ENDPOINT_URL=s3_server, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    return f"s3://{_new_bucket(s3_server)}"


def _keys(url: str) -> list[str]:
    fs, p = storage.fs_for(url)
    fs.invalidate_cache()
    return sorted(k[len(p):].lstrip("/") for k in fs.find(p))


def test_storage_options_from_env(bucket, s3_server):
    opts = storage.storage_options(f"{bucket}/x")
    assert opts["client_kwargs"] == {"endpoint_url": s3_server, "region_name": "us-east-1"}
    assert opts["key"] == "testing" and opts["secret"] == "testing"
    assert storage.storage_options("/tmp/x") == {}


def test_write_json_and_success_marker(bucket):
    out = f"{bucket}/run/candidates"
    assert not storage.is_complete(out)
    storage.write_json(f"{out}/_stats.json", {"stage": "extract", "output_rows": 3})
    assert storage.read_json(f"{out}/_stats.json") == {"stage": "extract", "output_rows": 3}
    assert not storage.is_complete(out)
    storage.mark_complete(out)
    assert storage.is_complete(out)
    assert _keys(out) == ["_SUCCESS", "_stats.json"]  # no temporaries left behind


def test_atomic_folder_appears_only_when_complete(bucket):
    out = f"{bucket}/run/shards"
    with storage.atomic_path(out) as tmp:
        fs, p = storage.fs_for(tmp)
        for name in ["00000.tar", "00000.parquet"]:
            with fs.open(f"{p}/{name}", "wb") as f:
                f.write(name.encode())
        assert not storage.exists(out)
    fs, p = storage.fs_for(out)
    assert _keys(out) == ["00000.parquet", "00000.tar"]
    assert fs.cat(f"{p}/00000.tar") == b"00000.tar"
    assert _keys(f"{bucket}/run") == ["shards/00000.parquet", "shards/00000.tar"]


def test_failed_write_leaves_nothing_and_rerun_replaces(bucket):
    out = f"{bucket}/run/report.html"
    with pytest.raises(RuntimeError), storage.atomic_path(out) as tmp:
        fs, p = storage.fs_for(tmp)
        with fs.open(p, "w") as f:
            f.write("half")
        raise RuntimeError("killed")
    assert _keys(f"{bucket}/run") == []
    for text in ["first", "second"]:  # a rerun overwrites the complete output, never appends
        with storage.atomic_path(out) as tmp:
            fs, p = storage.fs_for(tmp)
            with fs.open(p, "w") as f:
                f.write(text)
    fs, p = storage.fs_for(out)
    assert fs.cat(p) == b"second"
    assert _keys(f"{bucket}/run") == ["report.html"]


def test_clean_temporaries_removes_killed_attempts(bucket):
    folder = f"{bucket}/run/shards"
    fs, p = storage.fs_for(folder)
    for key in ["00000.tar", "00001.tar.tmp-1a2b3c4d", "00002.tmp-deadbeef/part-0.parquet"]:
        with fs.open(f"{p}/{key}", "wb") as f:
            f.write(b"x")
    assert storage.clean_temporaries(folder) == 2
    assert _keys(folder) == ["00000.tar"]
    assert storage.clean_temporaries(f"{bucket}/absent") == 0


def test_endpoint_and_credentials_from_run_config(s3_server, clean_env):
    """Nothing in the environment: the config's storage section alone reaches the server."""
    name = _new_bucket(s3_server)
    cfg = load_config(overrides={"output_dir": f"s3://{name}/run", "storage.endpoint_url": s3_server,
                                 "storage.key": "testing", "storage.secret": "testing", "storage.region": "us-east-1"})
    assert isinstance(cfg.storage, StorageConfig)
    storage.configure(cfg.storage)
    storage.write_json(cfg.path("_stats.json"), {"ok": True})
    assert storage.read_json(cfg.path("_stats.json")) == {"ok": True}
    assert os.environ["AWS_ENDPOINT_URL"] == s3_server  # child processes (Spark) see the same store


def test_spark_conf_for_s3a(clean_env):
    conf = storage.spark_conf(StorageConfig(endpoint_url="http://minio:9000", key="k", secret="s", region="us-east-1"))
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://minio:9000"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3a.access.key"] == "k" and conf["spark.hadoop.fs.s3a.secret.key"] == "s"
    assert conf["spark.executorEnv.AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert conf["spark.executorEnv.AWS_SECRET_ACCESS_KEY"] == "s"
    assert storage.spark_conf(None) == {}
    assert storage.to_spark_path("s3://wit/run") == "s3a://wit/run"


def test_stats_and_report_on_s3(bucket):
    """A stage that does its own I/O (the report) reads stats from and writes its page to s3://."""
    report = pytest.importorskip("pipeline.report")
    from pipeline.stats import StageStats, read_stats

    cfg = load_config(overrides={"output_dir": f"{bucket}/run"})
    st = StageStats("extract", input_rows=10, output_rows=7)
    st.drop("empty_text", 3)
    st.write(cfg.path("candidates"))
    storage.mark_complete(cfg.path("candidates"))
    assert read_stats(cfg.path("candidates"))["drops"] == {"empty_text": 3}
    out = report.run_report(cfg)
    assert out["path"] == f"{bucket}/run/report.html"
    fs, p = storage.fs_for(out["path"])
    page = fs.cat(p).decode()
    assert page.startswith("<!doctype html>") and "empty_text" in page
    assert not [k for k in _keys(f"{bucket}/run") if ".tmp-" in k]


def test_shard_cleanup_while_other_shards_commit(bucket):
    """A download task clears its shard's leftovers in shards/_tmp/ while other tasks' attempts come
    and go there, and on S3 the folder vanishes with its last entry: it never fails (a listing that
    found the folder gone failed the task, and in local mode the job) and removes only its own."""
    import threading

    import s3fs

    from pipeline.download import TMP_DIR, ShardJob, ShardSpec

    out = f"{bucket}/run/shards"
    job = ShardJob(load_config().download, out, ShardSpec(0, []), 3)
    fs, p = storage.fs_for(out)
    other = s3fs.S3FileSystem(skip_instance_cache=True, **storage.storage_options(out))  # another task's process
    stop = threading.Event()

    def other_task():  # shard 1's attempts: written to _tmp/, then moved away
        while not stop.is_set():
            other.pipe(f"{p}/{TMP_DIR}/00001-aaaaaaaa/00001.tar", b"x")
            other.rm(f"{p}/{TMP_DIR}/00001-aaaaaaaa", recursive=True)

    t = threading.Thread(target=other_task, daemon=True)
    t.start()
    try:
        for _ in range(400):  # the old exists-then-list failed within ~150 of these
            job._clean_tmp()
    finally:
        stop.set()
        t.join()
    for key in ["00000-deadbeef/00000.tar", "00000-deadbeef/00000.parquet", "00002-cafebabe/00002.tar"]:
        fs.pipe(f"{p}/{TMP_DIR}/{key}", b"partial")
    job._clean_tmp()
    assert _keys(out) == [f"{TMP_DIR}/00002-cafebabe/00002.tar"]


@pytest.mark.slow
def test_download_job_writes_shards_to_s3(bucket, tmp_path):
    """spark-submit jobs/download.py with input and output on s3://: the executors write the shards
    through fsspec with the endpoint and credentials from the environment.

    Nothing here assumes an idle machine: the fetch deadline and the job's limit are far above what
    a loaded one needs (the limit only stops a hung job), and the shard tasks commit side by side
    (test_shard_cleanup_while_other_shards_commit is the race a loaded machine made likely)."""
    import io
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.ids import make_uid
    from pipeline.sample_web import SampleWebServer, generate_sample_web
    from tests.cluster import REPO, spark_submit

    port = free_port()
    generate_sample_web(str(tmp_path), n_pairs=30, seed=0, base_url=f"http://127.0.0.1:{port}")
    gt = pq.read_table(tmp_path / "ground_truth.parquet").to_pylist()
    rows = [{"uid": make_uid(r["url"], r["true_caption"]), "url": r["url"], "text": r["true_caption"]}
            for r in gt if r["expected_status"] == "success" and not r["fault"]][:12]
    run = f"{bucket}/run"
    fs, p = storage.fs_for(f"{run}/balanced/part-00000.parquet")
    with fs.open(p, "wb") as f:
        pq.write_table(pa.Table.from_pylist(rows), f)
    with SampleWebServer(tmp_path / "site", port=port):
        spark_submit(REPO / "jobs" / "download.py",
                     ["--output-dir", run, "--set", "spark.executor_memory=512m", "--set", "spark.driver_memory=512m",
                      "--set", f"download.allow_hosts=[127.0.0.1:{port}]", "--set", "download.shard_size=5",
                      "--set", "download.timeout_s=120"],
                     master="local[2]", timeout=900)
    shards = f"{run}/shards"
    assert storage.is_complete(shards)
    keys = _keys(shards)
    assert {"00000.tar", "00000.parquet", "00002.tar", "_stats.json", "_SUCCESS"} <= set(keys)
    assert not [k for k in keys if ".tmp" in k]
    fs, p = storage.fs_for(shards)
    meta = pa.concat_tables(pq.read_table(io.BytesIO(fs.cat(f"{p}/{k}"))) for k in keys if k.endswith(".parquet"))
    assert sorted(meta.column("uid").to_pylist()) == sorted(r["uid"] for r in rows)
    assert set(meta.column("status").to_pylist()) == {"success"}
    members = []
    for k in (k for k in keys if k.endswith(".tar")):
        with tarfile.open(fileobj=io.BytesIO(fs.cat(f"{p}/{k}"))) as tar:
            members += tar.getnames()
    assert len([m for m in members if m.endswith(".jpg")]) == len(rows)
    assert storage.read_json(f"{shards}/_stats.json")["output_rows"] == len(rows)


@pytest.mark.slow
def test_train_resumes_on_s3_and_logs_each_step_once(bucket, tmp_path):
    """`wit train` with its output on s3://: resuming drops the metrics rows a killed run logged
    after its last checkpoint (there as on a local disk), then logs each step once."""
    pytest.importorskip("torch")
    wds = pytest.importorskip("webdataset")
    import io
    import json

    from PIL import Image

    from pipeline.train import run_train

    shards = tmp_path / "shards"
    shards.mkdir()
    with wds.TarWriter(str(shards / "00000.tar")) as w:
        for i in range(16):
            buf = io.BytesIO()
            Image.new("RGB", (40, 40), (i * 15, 255 - i * 15, 0)).save(buf, "JPEG")
            w.write({"__key__": f"{i:09d}", "jpg": buf.getvalue(), "txt": f"colour {i}"})
    cfg = load_config(overrides={
        "output_dir": f"{bucket}/run", "train.data": str(shards), "train.eval_dir": str(tmp_path / "no-eval"),
        "train.batch_size": 4, "train.steps": 6, "train.warmup_steps": 1, "train.num_workers": 0,
        "train.log_every": 1, "train.checkpoint_every": 2, "train.shuffle_buffer": 0})
    out = cfg.path("train")
    assert run_train(cfg, stop_after=2)["steps"] == 2 and not storage.is_complete(out)
    fs, p = storage.fs_for(f"{out}/metrics.jsonl")
    with fs.open(p, "a") as f:  # what a run killed between two checkpoints leaves: rows past step 2
        f.write(json.dumps({"step": 3, "loss": 1.0}) + "\n" + json.dumps({"step": 4, "loss": 1.0}) + "\n")
    summary = run_train(cfg, resume=True)
    assert summary["steps"] == 6 and storage.is_complete(out)
    fs.invalidate_cache()
    with fs.open(p, "r") as f:
        rows = [json.loads(line) for line in f]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and all("lr" in r for r in rows)
    assert storage.read_json(f"{out}/_stats.json")["steps"] == storage.read_json(f"{out}/summary.json")["steps"] == 6
    assert {"_SUCCESS", "_stats.json", "summary.json", "metrics.jsonl", "checkpoints/epoch_latest.pt"} == set(_keys(out))


def test_crawl_writes_to_s3(bucket, tmp_path):
    """spark-submit jobs/crawl.py with its output on s3://: frontiers, WARC parts, index and pages all go
    through the storage layer, from the driver, the fetch tasks and the frontier's Spark jobs."""
    import io

    import pyarrow.parquet as pq
    from warcio.archiveiterator import ArchiveIterator

    from pipeline.crawl import warc_files
    from tests.cluster import REPO, spark_submit
    from tests.conftest import served_sample_web

    out = f"{bucket}/run/crawl"
    with served_sample_web(tmp_path, n_pairs=20, seed=0) as (_, server):
        spark_submit(REPO / "jobs" / "crawl.py",
                     [server.url + "/", "--output", out, "--output-dir", f"{bucket}/run",
                      "--set", "spark.executor_memory=512m", "--set", "spark.driver_memory=512m",
                      "--set", f"download.allow_hosts=[127.0.0.1:{server.port}]", "--set", "download.timeout_s=60",
                      "--set", "crawl.min_interval_s=0", "--set", "crawl.max_crawl_delay_s=0",
                      "--set", "crawl.max_depth=1", "--set", "crawl.part_pages=5", "--set", "crawl.tasks=2"],
                     master="local[2]", timeout=900)
    assert storage.is_complete(out)
    keys = _keys(out)
    assert not [k for k in keys if ".tmp" in k]
    assert {"frontier", "rejected", "warc", "index", "pages", "rounds"} <= {k.split("/")[0] for k in keys}
    warcs = warc_files(out)
    assert warcs and all(w.startswith(out + "/warc/round-") for w in warcs)
    fs, p = storage.fs_for(out)
    index = [row for k in keys if k.startswith("index/") for row in pq.read_table(io.BytesIO(fs.cat(f"{p}/{k}"))).to_pylist()]
    assert server.url + "/" in {row["url"] for row in index}
    for row in index[:5]:  # the index points at each page's response record in its WARC part
        data = fs.cat(f"{p}/warc/{row['file']}")[row["offset"]:row["offset"] + row["length"]]
        rec = next(iter(ArchiveIterator(io.BytesIO(data))))
        assert rec.rec_type == "response" and rec.rec_headers.get_header("WARC-Target-URI") == row["url"]
    stats = storage.read_json(f"{out}/_stats.json")
    assert stats["output_rows"] == len(index) and stats["extra"]["rounds"] == 2
