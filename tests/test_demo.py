"""`wit demo` end to end with tiny settings: sample web → pipeline → two models → verdict → report."""

import json
import subprocess
import sys

import pytest

from pipeline.config import load_config
from pipeline.run import DEMO_EPOCHS, _demo_config, _with_demo_steps, curation_verdict, split_results


def _summary(r1=None, **top1):
    """A training summary with zero-shot top-1 per labelled split (400 shapes, 500 backgrounds) and,
    given ``r1``, image→text R@1 on 400 held-out pairs."""
    n = {"eval": 400, "eval_background": 500}
    chance = {"eval": 0.125, "eval_background": 0.1}
    ev = {"zeroshot_splits": {k: {"top1": v, "n_images": n[k], "chance_top1": chance[k]} for k, v in top1.items()}}
    if r1 is not None:
        ev["retrieval"] = {"image_to_text_R@1": r1, "n_images": 400, "n_texts": 400}
    return {"eval": ev}


SELECTION = {"kept": 1100, "pairs": 2100, "rule": "clip_score >= 0.212, the valley between the score histogram's modes"}


def test_verdict_says_plainly_when_filtering_is_worse():
    splits = split_results(_summary(eval=0.120, eval_background=0.774, r1=0.248),
                           _summary(eval=0.165, eval_background=0.578, r1=0.352))
    assert splits["eval_background"]["outcome"] == "worse" and splits["eval"]["outcome"] == "higher within noise"
    assert splits["retrieval"]["outcome"] == "better" and splits["retrieval"]["chance"] == 1 / 400
    v = curation_verdict(splits, SELECTION)
    assert v.startswith("Curation hurt: the filtered model is worse beyond noise on background colours.")
    assert "background colours (eval_background, 500 images), zero-shot top-1: 0.578 filtered vs 0.774 unfiltered (±0.058" in v
    assert "shapes (eval, 400 images), zero-shot top-1: 0.165 filtered vs 0.120 unfiltered (±0.049" in v
    assert "(retrieval, 400 images), image→text R@1: 0.352 filtered vs 0.248 unfiltered" in v and "1,100 of 2,100 pairs" in v


def test_verdict_better_beyond_noise_and_lower_within_noise():
    better = split_results(_summary(eval=0.13, eval_background=0.60), _summary(eval=0.14, eval_background=0.80))
    v = curation_verdict(better, SELECTION)
    assert v.startswith("Curation works: the filtered model is better beyond noise on background colours, and worse on none.")
    assert "shapes (eval, 400 images), zero-shot top-1: 0.140 filtered vs 0.130 unfiltered" in v and "higher within noise" in v
    lower = split_results(_summary(eval=0.15, eval_background=0.60), _summary(eval=0.13, eval_background=0.80))
    v = curation_verdict(lower, SELECTION)
    assert v.startswith("Curation works") and "It is lower, within noise, on shapes." in v


def test_verdict_no_clear_difference_and_missing_eval():
    same = split_results(_summary(eval=0.13, eval_background=0.70), _summary(eval=0.13, eval_background=0.72))
    v = curation_verdict(same)
    assert v.startswith("Curation made no clear difference: every gap is within the evaluation's noise.")
    assert "equal" in v and "higher within noise" in v and "Model B" not in v
    assert "missing" in curation_verdict(split_results({}, {}))


def test_demo_trains_both_models_for_a_few_passes_over_the_unfiltered_pool():
    """The demo's steps follow the pairs downloaded (DEMO_EPOCHS passes of batch_size), unless set."""
    cfg = load_config()
    steps = _with_demo_steps(cfg, {"output_rows": 2136}).train.steps
    assert steps == -(-DEMO_EPOCHS * 2136 // cfg.train.batch_size) and steps * cfg.train.batch_size >= DEMO_EPOCHS * 2136
    assert _with_demo_steps(cfg, {"output_rows": 1}).train.steps == 1
    assert _with_demo_steps(cfg, None).train.steps == cfg.train.steps  # nothing downloaded: the default
    chosen = load_config(overrides={"train.steps": 40})
    assert _with_demo_steps(chosen, {"output_rows": 2136}).train.steps == 40  # the user's steps win
    default = load_config(overrides={"train.steps": cfg.train.steps})  # set, though to the default: still the user's
    assert _with_demo_steps(default, {"output_rows": 2136}).train.steps == cfg.train.steps
    # The demo's own settings fill only what the user left unset, and leave train.steps unset for the rule above.
    demo = _demo_config(load_config(overrides={"download.shard_size": 10_000}), "http://127.0.0.1:9")
    assert demo.download.shard_size == 10_000 and demo.select.shard_size == 500 and demo.download.timeout_s == 5.0
    assert "127.0.0.1:9" in demo.download.allow_hosts and demo.select.threshold_rule == "valley"
    assert _with_demo_steps(demo, {"output_rows": 2136}).train.steps == steps
    better = split_results(_summary(eval=0.13, eval_background=0.60), _summary(eval=0.14, eval_background=0.80))
    assert "Same model, same 101 steps: " in curation_verdict(better, SELECTION, steps=101)


@pytest.mark.slow
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
    assert "eval_background" in curation["verdict"] and "retrieval" in curation["verdict"]
    assert set(curation["splits"]) == {"eval", "eval_background", "retrieval"} and curation["selection"]["kept"] is not None
    assert "threshold_rule" in json.loads((tmp_path / "demo" / "final" / "_stats.json").read_text())["extra"]
    # --port 0 picked another free port: the rerun regenerates the sample and redoes what depends on its URLs
    again = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    shards = json.loads((tmp_path / "demo" / "shards" / "_stats.json").read_text())
    assert shards["output_rows"] > 100  # the images were fetched again from the new address
