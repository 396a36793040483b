"""`wit demo` end to end with tiny settings: sample web → pipeline → two models → verdict → report."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_and_reruns_from_its_outputs(tmp_path):
    args = [sys.executable, "-m", "pipeline.cli", "demo", "-o", str(tmp_path / "demo"), "--n-pairs", "200", "--port", "0",
            "--set", "train.steps=4", "--set", "train.batch_size=16", "--set", "train.num_workers=0",
            "--set", "train.warmup_steps=1", "--set", "score.num_workers=0"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Report:" in out.stdout and "zero-shot top-1" in out.stdout
    curation = json.loads((tmp_path / "demo" / "train" / "curation.json").read_text())
    assert curation["filtered_top1"] is not None and curation["unfiltered_top1"] is not None
    assert curation["verdict"] in out.stdout
    report = (tmp_path / "demo" / "report.html").read_text()
    assert len(report) > 10_000
    # both models are evaluated zero-shot on both labelled splits of the sample web, shown in the report
    for model in ("unfiltered", "filtered"):
        splits = json.loads((tmp_path / "demo" / "train" / model / "summary.json").read_text())["eval"]["zeroshot_splits"]
        assert list(splits) == ["eval", "eval_background"]
    assert report.count("eval_background: ") == 2
    assert set(curation["other_splits"]) == {"eval_background"} and "eval_background" in curation["verdict"]
    # --port 0 picked another free port: the rerun regenerates the sample and redoes what depends on its URLs
    again = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    shards = json.loads((tmp_path / "demo" / "shards" / "_stats.json").read_text())
    assert shards["output_rows"] > 100  # the images were fetched again from the new address
