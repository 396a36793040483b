"""Progress output: a tqdm bar on a terminal, plain periodic lines otherwise (done/total, rate,
failures by reason, ETA), fed from per-part status files; download shows it while it runs."""

from __future__ import annotations

import io
import json
import re
import threading
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import progress
from pipeline.config import load_config
from tests.conftest import served_sample_web


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    p = progress.Progress("download", 1000, stream=out, every_s=0)
    assert not p.tty
    p.update(0)
    p.update(250, Counter({"timeout": 3, "not_image": 7}))
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # one per update (every_s=0) and the final one
    assert re.search(r"download: 250/1,000 rows \(25%\), [\d.,]+ rows/s, failed: not_image=7 timeout=3", lines[1])
    assert "ETA" in lines[1]
    assert "\r" not in out.getvalue()  # no bar redraws in a log file


def test_plain_lines_are_rate_limited():
    out = io.StringIO()
    p = progress.Progress("x", 10, stream=out, every_s=3600)
    for i in range(10):
        p.update(i)
    assert out.getvalue() == ""
    p.close()
    assert out.getvalue().count("\n") == 1


def test_bar_on_a_terminal():
    out = _Terminal()
    p = progress.Progress("download", 1000, stream=out)
    assert p.tty
    p.update(400, Counter({"timeout": 2}))
    p.close()
    text = out.getvalue()
    assert "download:" in text and "400/1" in text and "failed: timeout=2" in text and "\r" in text


def test_status_line_eta_and_without_total():
    assert progress.status_line("s", 50, 100, 10.0, Counter()) == "s: 50/100 rows (50%), 10.0 rows/s, ETA 0m05s"
    assert progress.status_line("s", 5, None, 0.0, Counter({"a": 1}), unit="pages") == "s: 5 pages, 0.0 pages/s, failed: a=1"


def test_watch_follows_status_files_written_by_tasks(tmp_path):
    """Parts finishing in another thread (as executors do) show up; the final line has the totals."""
    out = io.StringIO()
    release = [threading.Event() for _ in range(3)]

    def tasks():
        for i, ev in enumerate(release):
            ev.wait()
            (tmp_path / f"{i:05d}_stats.json").write_text(json.dumps({"count": 10, "failures": {"timeout": i}}))

    (tmp_path / "_stats.json").write_text(json.dumps({"count": 999}))  # the stage's own stats: not a part
    t = threading.Thread(target=tasks)
    t.start()
    watch = progress.Watch(progress.Progress("download", 30, stream=out, every_s=0),
                           progress.StatusFiles(str(tmp_path), pattern="[0-9]*_stats.json"), poll_s=0.01)
    with watch:
        for ev in release:
            ev.set()
        t.join()
    last = out.getvalue().splitlines()[-1]
    assert "download: 30/30 rows (100%)" in last and "failed: timeout=3" in last


def test_download_reports_progress(spark, tmp_path, capfd):
    from pipeline.download import run_download

    with served_sample_web(tmp_path, n_pairs=30, seed=1) as (sample, server):
        gt = pq.read_table(sample / "ground_truth.parquet").to_pylist()
        src = tmp_path / "in"
        src.mkdir()
        pq.write_table(pa.Table.from_pylist([{"url": r["url"], "text": "a cat"} for r in gt]), src / "p.parquet")
        cfg = load_config(overrides={"output_dir": str(tmp_path / "o"), "download.allow_hosts": [f"127.0.0.1:{server.port}"],
                                     "download.shard_size": 10, "download.timeout_s": 5.0, "download.retries": 0})
        stats = run_download(cfg, spark, input=str(src))
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if re.search(r"download: [\d,]+/[\d,]+ rows", ln)]
    assert lines, err
    n = len(gt)
    assert f"download: {n}/{n} rows (100%)" in lines[-1]
    for reason in stats["drops"]:
        assert f"{reason}=" in lines[-1]


def _slow_job(spark, parts: int = 4, seconds: float = 1.5) -> int:
    """A Spark job that outlasts a couple of status polls: ``parts`` tasks of ``seconds`` each."""
    import time

    return spark.sparkContext.parallelize(range(parts), parts).map(lambda x: time.sleep(seconds) or x).count()


def test_spark_tasks_are_counted_from_the_status_tracker(spark):
    tasks = progress.SparkTasks()
    assert tasks() == (0, 0, Counter())  # nothing of ours has run yet
    out = io.StringIO()
    with progress.Watch(progress.Progress("job", None, unit="tasks", stream=out, every_s=0), tasks, poll_s=0.2,
                        defer=True):
        assert _slow_job(spark) == 4
    done, total, failures = tasks()
    assert (done, total) == (4, 4) and not failures
    assert "job: 4/4 tasks (100%)" in out.getvalue().splitlines()[-1]


def test_every_stage_shows_its_spark_tasks(spark, capfd):
    """The stage executor wraps each step: a line of its Spark tasks on stderr (not a TTY here)."""
    step = progress.with_task_progress("filter", lambda n: _slow_job(spark, n))
    assert step(4) == 4
    lines = [ln for ln in capfd.readouterr().err.splitlines() if "filter:" in ln]
    assert lines and "filter: 4/4 tasks (100%)" in lines[-1]


def test_task_progress_stays_quiet_while_a_stage_shows_rows():
    """Download shows rows; the task line of the same stage would only repeat it."""
    rows, tasks = io.StringIO(), io.StringIO()
    row_watch = progress.Watch(progress.Progress("download", 10, stream=rows, every_s=0), lambda: (10, Counter()))
    task_watch = progress.Watch(progress.Progress("download", None, unit="tasks", stream=tasks, every_s=0),
                                lambda: (3, 5, Counter()), defer=True)
    with row_watch, task_watch:
        pass
    assert "download: 10/10 rows (100%)" in rows.getvalue()
    assert tasks.getvalue() == ""


def test_a_failed_stage_ends_with_its_error_not_a_task_count():
    out = io.StringIO()
    with pytest.raises(ValueError):
        with progress.Watch(progress.Progress("extract", None, unit="tasks", stream=out, every_s=3600),
                            lambda: (1, 4, Counter()), poll_s=3600, defer=True):
            raise ValueError("damaged input")
    assert out.getvalue() == ""


def test_task_progress_prints_nothing_for_a_stage_without_spark():
    out = io.StringIO()
    with progress.Watch(progress.Progress("train", None, unit="tasks", stream=out, every_s=0),
                        lambda: (0, 0, Counter()), defer=True):
        pass
    assert out.getvalue() == ""


def test_task_bar_on_a_terminal_grows_its_total():
    out = _Terminal()
    p = progress.Progress("extract", None, unit="tasks", stream=out)
    w = progress.Watch(p, iter([(1, 2, Counter()), (3, 6, Counter({"task_retried": 1})), (6, 6, Counter())]).__next__,
                       poll_s=3600, defer=True)
    w._show()
    w._show()
    w._show()
    p.close()
    text = out.getvalue()
    assert "\r" in text and re.search(r"6(\.00)?/6", text) and "task_retried=1" in text


def test_run_prints_the_spark_ui_address(tmp_path):
    """`wit run` turns the Spark UI on and says where it is before the first stage (its own JVM here)."""
    import os
    import subprocess
    import sys

    pq.write_table(pa.Table.from_pylist([{"url": "http://example.com/a.jpg", "text": "a red bicycle by the lake"}]),
                   tmp_path / "c.parquet")
    (tmp_path / "run.yaml").write_text(f"output_dir: {tmp_path / 'o'}\nextract: {{inputs: [{tmp_path / 'c.parquet'}]}}\n"
                                       "spark: {master: 'local[1]', conf: {spark.ui.port: '0'}}\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "-c", str(tmp_path / "run.yaml"), "--only", "extract"],
                       capture_output=True, text=True, cwd=root, timeout=300,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])})
    assert r.returncode == 0, r.stderr[-2000:]
    ui = [ln for ln in r.stderr.splitlines() if "Spark UI:" in ln]
    assert ui and re.search(r"Spark UI: http://[^ ]+:\d+ \(application ", ui[0]), r.stderr[-2000:]
    assert r.stderr.index("Spark UI:") < r.stderr.index("[1/1] extract")


def test_counted_progress_from_a_loop():
    """``add`` counts work done in this process (score's batches): from zero, lines rate-limited, one at the end."""
    out = io.StringIO()
    p = progress.Progress("score", None, unit="pairs", stream=out, every_s=3600)
    for _ in range(4):
        p.add(128)
    p.add()
    assert out.getvalue() == ""
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and re.search(r"score: 513 pairs, [\d.,]+ pairs/s$", lines[0])


def test_counted_progress_rates_its_first_batch():
    """A count starts at zero: the first ``add`` is work done in this run (an absolute ``update`` would take it
    as work done before a resume, and show 0.0/s)."""
    out = io.StringIO()
    p = progress.Progress("score", None, unit="pairs", stream=out, every_s=0)
    p.add(128)
    assert re.search(r"score: 128 pairs, [\d.,]+ pairs/s$", out.getvalue().strip())
    assert ", 0.0 pairs/s" not in out.getvalue()


def test_counted_bar_on_a_terminal():
    out = _Terminal()
    p = progress.Progress("sample web", 10, unit="pairs", stream=out)
    for _ in range(5):
        p.add(2)
    p.close()
    text = out.getvalue()
    assert "sample web:" in text and re.search(r"10(\.0+)?/10", text) and "\r" in text


def test_sample_web_generation_reports_its_progress(tmp_path, capfd):
    """The sample web's generator counts its pairs through pipeline.progress (a log file here: plain lines)."""
    from pipeline.sample_web import generate_sample_web

    generate_sample_web(str(tmp_path / "s"), n_pairs=40, seed=3, eval_per_class=1)
    lines = [ln for ln in capfd.readouterr().err.splitlines() if "sample web: " in ln and " pairs (" in ln]
    assert lines and re.search(r"sample web: 40/40 pairs \(100%\), [\d.,]+ pairs/s$", lines[-1]), lines
