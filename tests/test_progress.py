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
