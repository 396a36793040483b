"""`wit plan`: the capacity estimate from the recorded bench results, and a clear error without them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline import plan
from pipeline.cli import main
from pipeline.errors import UserError

RESULTS = Path(plan.RESULTS_DIR)
FILES = ["e2e.json", "download.json", "score_gpu.json", "train_gpu.json"]


def _results(tmp_path: Path, cpu_rate: float = 100.0) -> Path:
    """A results folder of the shape the benches write, with round numbers to check the arithmetic by hand."""
    stages = [{"stage": s, "rows_per_s_per_core": cpu_rate} for s in plan.CPU_STAGES]
    (tmp_path / "e2e.json").write_text(json.dumps({
        "local_1000": {"pairs": 1000, "master": "local[*]", "cores": 2, "stages": stages},
        "real_archive_yield": {"pages_trimmed": 10, "pairs_trimmed": 20}}))
    (tmp_path / "download.json").write_text(json.dumps({
        "machine": {"cpus": 2}, "web": {"hosts": 2000, "params": {"processes": 2},
                                        "ours": {"all": {"images_per_s": 200.0}}}}))
    (tmp_path / "score_gpu.json").write_text(json.dumps(
        {"model": "ViT-B-32", "gpu": "H200", "end_to_end_gpu_preprocess_decode_pairs_per_s": 1000.0}))
    (tmp_path / "train_gpu.json").write_text(json.dumps({"model": "ViT-B-32", "ours": {"samples_per_s": 4000.0}}))
    return tmp_path


def test_plan_arithmetic_from_the_results(tmp_path):
    rates = plan.load_rates(str(_results(tmp_path)))
    assert rates.pairs_per_page == 2.0 and rates.download_images_per_s_per_core == 100.0
    a = plan.Assumptions(top_fraction=0.5, download_success=0.5, curation_keep=0.5, epochs=1, node_gbit=1000)
    p = plan.plan(1_000_000, nodes=10, cores=10, rates=rates, a=a, gpus=2)
    assert p["scored"] == 2e6 and p["download_attempts"] == 4e6 and p["candidates"] == 8e6
    assert p["wat_files"] == -(-8e6 // (plan.PAGES_PER_WAT * 2.0))
    assert p["cpu_hours_wall"]["extract"] == pytest.approx(8e6 / (100 * 100) / 3600)
    assert p["cpu_hours_wall"]["download"] == pytest.approx(4e6 / (100 * 100) / 3600) and p["download_bound"] == "CPU"
    slow_link = plan.plan(1_000_000, 10, 10, rates, plan.Assumptions(**{**vars(a), "node_gbit": 0.01, "image_kb": 100}))
    assert slow_link["download_bound"] == "bandwidth"
    assert slow_link["cpu_hours_wall"]["download"] == pytest.approx(4e6 * 100 * 8e3 / (0.01e9 * 10) / 3600)
    assert p["gpu_hours"]["score ViT-B-32"] == pytest.approx(2e6 / 1000 / 3600)
    assert p["gpu_wall_hours"]["score ViT-B-32"] == pytest.approx(p["gpu_hours"]["score ViT-B-32"] / 2)
    assert p["gpu_hours"]["train ViT-B-32 (1 epochs)"] == pytest.approx(1e6 / 4000 / 3600)
    twice = plan.plan(1_000_000, nodes=20, cores=10, rates=rates, a=a, gpus=2)
    assert twice["cpu_hours_wall"]["filter"] == pytest.approx(p["cpu_hours_wall"]["filter"] / 2)


def test_each_stage_rate_comes_from_the_largest_run_that_has_it(tmp_path):
    _results(tmp_path)
    e2e = json.loads((tmp_path / "e2e.json").read_text())
    e2e["local_big"] = {"pairs": 10**5, "master": "local[2]", "cores": 2,
                        "stages": [{"stage": "extract", "rows_per_s_per_core": 500.0}]}  # stopped after extract
    (tmp_path / "e2e.json").write_text(json.dumps(e2e))
    rates = plan.load_rates(str(tmp_path))
    assert rates.cpu_rows_per_s_per_core["extract"] == 500.0 and rates.cpu_rows_per_s_per_core["select"] == 100.0
    del e2e["local_1000"]
    (tmp_path / "e2e.json").write_text(json.dumps(e2e))
    with pytest.raises(UserError, match="no local run has stage 'filter'"):
        plan.load_rates(str(tmp_path))


def test_missing_results_file_names_it_and_its_bench(tmp_path):
    _results(tmp_path)
    (tmp_path / "score_gpu.json").unlink()
    with pytest.raises(UserError, match=r"score_gpu\.json.*bench/gpu\.sh"):
        plan.load_rates(str(tmp_path))


def test_damaged_results_file_is_one_clear_error(tmp_path):
    _results(tmp_path)
    (tmp_path / "e2e.json").write_text("{not json")
    with pytest.raises(UserError, match=r"e2e\.json is not valid JSON"):
        plan.load_rates(str(tmp_path))


def test_cli_prints_the_plan(tmp_path, capsys):
    rc = main(["plan", "--pairs", "400e6", "--nodes", "10", "--cores", "32", "--results", str(_results(tmp_path))])
    out = capsys.readouterr().out
    assert rc == 0
    assert "400.0M final pairs on 10 node(s) × 32 cores" in out and "WAT files to read" in out
    assert "score ViT-B-32" in out and "-bound at 2 Gbit/s per node" in out


def test_cli_without_results_exits_2_with_one_line(tmp_path, capsys):
    assert main(["plan", "--pairs", "1000", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wit plan needs" in err[0] and "e2e.json" in err[0]


@pytest.mark.skipif(not all((RESULTS / f).exists() for f in FILES), reason="bench results not recorded in this checkout")
def test_plan_from_the_recorded_results(tmp_path):
    for f in FILES:
        shutil.copy(RESULTS / f, tmp_path / f)
    p = plan.plan(400_000_000, 50, 32, plan.load_rates(str(tmp_path)))
    assert p["wat_files"] > 0 and all(h > 0 for h in p["cpu_hours_wall"].values())
