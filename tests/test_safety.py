"""Zero-shot safety tagging in `wit score` (the unsafe_score column) and select's cut on it
(filters/safety.py): values against open_clip's own zero-shot path, determinism, one forward pass
per batch and one model load, the switch that turns it off, and the threshold rule."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from shardkit import jpeg, write_shards

import schemas
from filters.safety import UnsafeFilter
from pipeline import score as score_mod
from pipeline.config import load_config
from pipeline.config_sections import SAFE_PROMPTS, UNSAFE_PROMPTS
from pipeline.errors import ConfigError, UserError
from pipeline.score import Scorer, list_shards, run_score, score_shards


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return Scorer("wit-tiny", None, "cpu")


def cfg_for(tmp_path, **score):
    base = {"model": "wit-tiny", "device": "cpu", "batch_size": 4, "num_workers": 0}
    base.update(score)
    return load_config(overrides={"output_dir": str(tmp_path), **{f"score.{k}": v for k, v in base.items()}})


def samples(n=10):
    out = [{"text": f"a picture number {i}", "image": jpeg(40 + 5 * i, 48, i)} for i in range(n)]
    out[2] = {"text": "corrupt", "image": b"\xff\xd8\xff\xe0 not a jpeg"}
    return out


def read_scores(folder) -> dict[str, dict]:
    t = pq.read_table([str(p) for p in sorted(folder.glob("*.parquet"))])
    schemas.validate(t, schemas.SCORES)
    return {r["key"]: r for r in t.to_pylist()}


def reference_unsafe(scorer: Scorer, images: list[bytes], unsafe: list[str], safe: list[str]) -> np.ndarray:
    """open_clip's own zero-shot path: PIL → preprocess → encode_image; prompts → encode_text;
    softmax(100 · cosine) over all prompts, mass on the unsafe ones."""
    x = torch.stack([scorer.preprocess(Image.open(io.BytesIO(b))) for b in images])
    with torch.no_grad():
        img = scorer.model.encode_image(x, normalize=True)
        txt = scorer.model.encode_text(scorer.tokenizer(unsafe + safe), normalize=True)
    return (100.0 * img @ txt.T).softmax(-1)[:, : len(unsafe)].sum(-1).numpy()


def use(scorer, cfg):
    score_mod._SCORERS.clear()
    score_mod._SCORERS[(cfg.score.model, cfg.score.pretrained, "cpu", "auto")] = scorer


def test_unsafe_score_matches_zero_shot_reference(tmp_path, tiny):
    data = samples()
    rows = write_shards(tmp_path / "shards", data, shard_size=4)
    cfg = cfg_for(tmp_path)
    use(tiny, cfg)
    stats = run_score(cfg)
    got = read_scores(tmp_path / "scores")
    ok = [(r, s) for r, s in zip(rows, data, strict=True) if s["text"] != "corrupt"]
    ours = np.array([got[r["key"]]["unsafe_score"] for r, _ in ok])
    assert np.all((ours >= 0) & (ours <= 1))
    ref = reference_unsafe(tiny, [s["image"] for _, s in ok], UNSAFE_PROMPTS, SAFE_PROMPTS)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    bad = got[rows[2]["key"]]
    assert bad["score_error"] == "decode_error" and bad["unsafe_score"] is None and bad["clip_score"] is None
    assert stats["extra"]["safety"] is True
    assert stats["extra"]["mean_unsafe_score"] == pytest.approx(float(ours.mean()), abs=1e-5)


def test_custom_prompts_and_determinism(tmp_path, tiny):
    data = samples(6)
    write_shards(tmp_path / "shards", data, shard_size=6)
    unsafe, safe = ["a photo of a red thing"], ["a photo of a blue thing", "a photo of a green thing"]
    prompts = {"unsafe": unsafe, "safe": safe}
    runs = []
    for out in ("a", "b"):
        cfg = cfg_for(tmp_path / out, safety_prompts=prompts)
        use(tiny, cfg)
        run_score(cfg, input=str(tmp_path / "shards"))
        runs.append(read_scores(tmp_path / out / "scores"))
    assert runs[0].keys() == runs[1].keys()
    assert all(runs[0][k]["unsafe_score"] == runs[1][k]["unsafe_score"] for k in runs[0])  # bit for bit
    keys = sorted(k for k, r in runs[0].items() if r["score_error"] is None)
    ok = [s["image"] for s in data if s["text"] != "corrupt"]
    np.testing.assert_allclose([runs[0][k]["unsafe_score"] for k in keys], reference_unsafe(tiny, ok, unsafe, safe), atol=1e-4)


def test_one_model_load_and_one_forward_pass_per_batch(tmp_path, monkeypatch):
    """Safety reuses the scoring pass: the model loads once, every batch encodes its images once,
    and the prompts are encoded once per loaded model however many shards and runs follow."""
    from pipeline import models

    loads = []
    real_load = models.load_clip
    monkeypatch.setattr(models, "load_clip", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    score_mod._SCORERS.clear()
    write_shards(tmp_path / "shards", samples(10), shard_size=3)  # 4 shards
    shards = list_shards(str(tmp_path / "shards"))

    cfg = cfg_for(tmp_path)
    scorer = score_mod.get_scorer(cfg.score)
    calls = {"image": 0, "text": 0}
    model = scorer.model
    real_image, real_text = model.encode_image, model.encode_text

    def count(kind, fn):
        def wrapped(*a, **k):
            calls[kind] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(model, "encode_image", count("image", real_image))
    monkeypatch.setattr(model, "encode_text", count("text", real_text))

    prompts = score_mod.safety_prompts(cfg.score)
    score_shards(scorer, shards, str(tmp_path / "off"), batch_size=4, num_workers=0)
    off = dict(calls)
    calls.update(image=0, text=0)
    score_shards(scorer, shards, str(tmp_path / "on"), batch_size=4, num_workers=0, safety=prompts)
    assert calls == {"image": off["image"], "text": off["text"] + 1}  # + the prompts, once
    calls.update(image=0, text=0)
    score_shards(scorer, shards, str(tmp_path / "again"), batch_size=4, num_workers=0, safety=prompts)
    assert calls == off  # the prompt embeddings are kept with the model

    stats = run_score(cfg)  # the stage gets the same cached model: no second load
    assert stats["output_rows"] == 9 and len(loads) == 1
    assert score_mod.get_scorer(cfg.score) is scorer


def test_safety_off_leaves_the_column_null(tmp_path, tiny):
    write_shards(tmp_path / "shards", samples(5), shard_size=5)
    cfg = cfg_for(tmp_path, safety=False)
    use(tiny, cfg)
    stats = run_score(cfg)
    got = read_scores(tmp_path / "scores")
    assert [r["unsafe_score"] for r in got.values()] == [None] * 5
    assert [r["clip_score"] is None for r in got.values()].count(False) == 4  # scores as usual
    assert stats["extra"]["safety"] is False and stats["extra"]["mean_unsafe_score"] is None


def test_resume_over_shards_scored_before_the_column(tmp_path, tiny):
    """A scores folder from before unsafe_score existed: its finished shards are kept (their
    unsafe_score reads as null) and the stats still come out."""
    write_shards(tmp_path / "shards", samples(8), shard_size=4)
    cfg = cfg_for(tmp_path)
    use(tiny, cfg)
    run_score(cfg)
    out = tmp_path / "scores"
    old = pq.read_table(out / "00000.parquet").drop_columns(["unsafe_score"])
    pq.write_table(old, out / "00000.parquet")
    (out / "00001.parquet").unlink()
    (out / "_SUCCESS").unlink()
    stats = run_score(cfg)
    assert stats["extra"]["shards_scored_now"] == 1 and stats["output_rows"] == 7
    assert pq.read_table(out / "00001.parquet").column("unsafe_score").null_count == 0


def test_prompt_config_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="score.safety_prompts.unsafe"):
        cfg_for(tmp_path, safety_prompts={"unsafe": [], "safe": ["a photo"]})
    with pytest.raises(ConfigError, match="score.safety_prompts.safe"):
        cfg_for(tmp_path, safety_prompts={"unsafe": ["x"], "safe": ["  "]})
    with pytest.raises(ConfigError, match="unknown key"):
        cfg_for(tmp_path, safety_prompts={"nsfw": ["x"]})
    cfg = cfg_for(tmp_path, safety_prompts={"unsafe": ["x"]})
    assert cfg.score.safety_prompts.safe == SAFE_PROMPTS  # the other side keeps its default


# --- select's cut: filters/safety.py --------------------------------------------------------------
def batch(scores):
    return pa.RecordBatch.from_pydict({"uid": [str(i) for i in range(len(scores))],
                                       "unsafe_score": pa.array(scores, pa.float32())})


def test_unsafe_filter_threshold():
    scores = [0.1, 0.5, 0.50001, 0.9, None, float("nan"), 1.0, 0.0]
    keep = UnsafeFilter(0.5).apply(batch(scores)).keep
    assert keep.tolist() == [True, True, False, False, True, True, False, True]  # unscored rows are not its to drop
    assert UnsafeFilter(None).apply(batch(scores)).keep.all()
    assert UnsafeFilter(1.0).apply(batch(scores)).keep.all()
    assert UnsafeFilter(0.0).apply(batch(scores)).keep.tolist() == [False, False, False, False, True, True, False, True]
    assert UnsafeFilter(0.5).apply(batch([])).keep.shape == (0,)
    with pytest.raises(UserError, match="within"):
        UnsafeFilter(1.5)


def test_unsafe_filter_from_config():
    def cfg(max_score, safety=True):
        return load_config(overrides={"select.max_unsafe_score": max_score, "score.safety": safety})

    assert UnsafeFilter.from_config(cfg(0.7)).max_score == 0.7
    assert UnsafeFilter.from_config(cfg(None, safety=False)).max_score is None
    with pytest.raises(UserError, match="score.safety is off"):
        UnsafeFilter.from_config(cfg(0.7, safety=False))
    with pytest.raises(ConfigError, match="select.max_unsafe_score"):
        cfg(1.5)
    from filters import registry

    assert registry.filter_class("unsafe") is UnsafeFilter and UnsafeFilter.name == "unsafe"
