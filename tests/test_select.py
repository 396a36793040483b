"""`wit select`: the CLIP cut is global, image rules and dedup drop with reasons, and the final
shards load as they are with webdataset and open_clip's webdataset pipeline."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from shardkit import jpeg, write_shards

import schemas
from pipeline.config import load_config
from pipeline.select import run_select


def write_scores(folder, rows, scores: dict[str, float | None]):
    """scores/NNNNN.parquet for the downloaded rows (the score stage's output format)."""
    folder.mkdir(parents=True, exist_ok=True)
    by_shard: dict[int, list] = {}
    for r in rows:
        if r["status"] == "success":
            s = scores[r["key"]]
            by_shard.setdefault(r["shard"], []).append(
                {"uid": r["uid"], "key": r["key"], "shard": r["shard"], "clip_score": s,
                 "score_error": None if s is not None else "decode_error"}
            )
    for shard, rs in by_shard.items():
        pq.write_table(schemas.conform(pa.Table.from_pylist(rs), schemas.SCORES), folder / f"{shard:05d}.parquet")


def cfg_for(tmp_path, **sel):
    return load_config(overrides={"output_dir": str(tmp_path), **{f"select.{k}": v for k, v in sel.items()}})


def read_final(folder):
    manifest = pq.read_table(folder / "manifest.parquet")
    schemas.validate(manifest, schemas.MANIFEST)
    sizes = json.loads((folder / "sizes.json").read_text())
    return manifest.to_pylist(), sizes


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """3 download shards of 10 where shard 0 scores high, 1 middling, 2 low: a per-shard top 30%
    would keep 3 of each, the global top 30% keeps shard 0's 9 best."""
    tmp = tmp_path_factory.mktemp("pool")
    samples, scores = [], []
    for s in range(3):
        for i in range(10):
            samples.append({"text": f"caption {s} {i}", "image": jpeg(64, 64, 100 * s + i), "width": 300, "height": 300})
            scores.append(0.9 - 0.3 * s - 0.01 * i)
    rows = write_shards(tmp / "shards", samples, shard_size=10)
    write_scores(tmp / "scores", rows, {r["key"]: sc for r, sc in zip(rows, scores, strict=True)})
    return tmp, rows, scores


def test_top_fraction_is_global(pool, spark, tmp_path):
    src, rows, scores = pool
    cfg = cfg_for(tmp_path, top_fraction=0.3, shard_size=4, min_side=0)
    stats = run_select(cfg, spark, input=str(src / "shards"), scores=str(src / "scores"))
    manifest, sizes = read_final(tmp_path / "final")
    best9 = {r["uid"] for r, _ in sorted(zip(rows, scores, strict=True), key=lambda x: -x[1])[:9]}
    assert {m["uid"] for m in manifest} == best9  # all from shard 0: the cut is over the whole pool
    assert stats["drops"] == {"low_clip_score": 21} and stats["output_rows"] == 9
    assert sizes == {"00000.tar": 4, "00001.tar": 4, "00002.tar": 1}
    assert (tmp_path / "final" / "_SUCCESS").exists()


def test_threshold_rules_dedup_and_format(spark, tmp_path):
    big = {"width": 400, "height": 300}
    dup = jpeg(64, 64, 7)
    samples = [
        {"text": "good one", "image": jpeg(64, 64, 1), **big},                       # kept
        {"text": "good two", "image": jpeg(64, 64, 2), **big},                       # kept
        {"text": "low score", "image": jpeg(64, 64, 3), **big},                      # low_clip_score
        {"text": "tiny image", "image": jpeg(64, 64, 4), "width": 120, "height": 300},  # too_small
        {"text": "panorama", "image": jpeg(64, 64, 5), "width": 1600, "height": 400},   # bad_aspect_ratio
        {"text": "404", "image": None},                                              # not_downloaded
        {"text": "copy best", "image": dup, **big},                                  # kept (best copy)
        {"text": "copy worse", "image": dup, **big},                                 # duplicate_image
        {"text": "broken", "image": jpeg(64, 64, 9), **big},                         # score_error
        {"text": "good png", "image": jpeg(64, 64, 10, fmt="PNG"), "ext": "png", **big},  # kept
    ]
    score = [0.40, 0.35, 0.10, 0.50, 0.50, None, 0.45, 0.30, None, 0.31]
    rows = write_shards(tmp_path / "shards", samples, shard_size=4)
    write_scores(tmp_path / "scores", rows, {r["key"]: s for r, s in zip(rows, score, strict=True)})
    cfg = cfg_for(tmp_path, threshold=0.28, min_side=200, max_aspect_ratio=3.0, shard_size=3)
    stats = run_select(cfg, spark)
    assert stats["drops"] == {"low_clip_score": 1, "too_small": 1, "bad_aspect_ratio": 1, "not_downloaded": 1,
                              "duplicate_image": 1, "score_error": 1}
    manifest, sizes = read_final(tmp_path / "final")
    assert sorted(m["text"] for m in manifest) == ["copy best", "good one", "good png", "good two"]
    assert sizes == {"00000.tar": 3, "00001.tar": 1}

    # The shards as webdataset reads them: same members, captions, json with the final key.
    urls = [str(tmp_path / "final" / n) for n in sorted(sizes)]
    got = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(got) == 4 and [g["__key__"] for g in got] == [m["key"] for m in manifest]
    by_text = {s["text"]: s for s in samples}
    for g, m in zip(got, manifest, strict=True):
        ext = "png" if "png" in g else "jpg"
        assert g[ext] == by_text[m["text"]]["image"] and g["txt"].decode() == m["text"]
        meta = json.loads(g["json"])
        assert meta["key"] == m["key"] and meta["uid"] == m["uid"] and meta["clip_score"] == pytest.approx(m["clip_score"])

    # Open_clip's training pipeline (open_clip_train.data.get_wds_dataset) does this per sample,
    # and counts the epoch from sizes.json next to the shards.
    import open_clip

    from pipeline.models import register_models

    register_models()
    _, _, preprocess = open_clip.create_model_and_transforms("wit-tiny")
    tok = open_clip.get_tokenizer("wit-tiny")
    pipe = (
        wds.WebDataset(urls, shardshuffle=False).decode("pilrgb")
        .rename(image="jpg;png;jpeg;webp", text="txt").map_dict(image=preprocess, text=lambda t: tok([t])[0])
        .to_tuple("image", "text").batched(2)
    )
    batches = list(pipe)
    assert sum(len(b[0]) for b in batches) == sum(sizes.values()) == 4

    # Deterministic: a rerun gives the same order; another seed another order, same set.
    again = run_select(cfg, spark, overwrite=True)
    assert again["output_rows"] == 4 and read_final(tmp_path / "final")[0] == manifest
    run_select(cfg_for(tmp_path, threshold=0.28, min_side=200, shard_size=3, seed=5), spark, overwrite=True)
    other, _ = read_final(tmp_path / "final")
    assert {m["uid"] for m in other} == {m["uid"] for m in manifest}


def test_download_shards_past_100000(spark, tmp_path):
    """Shards 99,999 and 100,000 of a 100,001-shard download (6-digit names and keys, the download's
    rule) select like any others; final shard names follow the same rule."""
    import hashlib

    from pipeline.ids import make_uid
    from pipeline.shards import sample_key, shard_name, shard_name_column

    n_shards, folder = 100_001, tmp_path / "shards"
    folder.mkdir()
    rows = []
    for shard in (99_999, 100_000):
        name, shard_rows = shard_name(shard, n_shards), []
        with wds.TarWriter(str(folder / f"{name}.tar")) as tw:
            for i in range(3):
                img, text = jpeg(32, 32, shard % 7 + 10 * i), f"caption {shard} {i}"
                key, url = sample_key(shard, i, n_shards, 10), f"http://127.0.0.1/{shard}/{i}.jpg"
                row = {"uid": make_uid(url, text), "url": url, "text": text, "text_source": "alt", "source_file": "t", "key": key,
                       "shard": shard, "status": "success", "width": 32, "height": 32, "original_width": 320,
                       "original_height": 320, "bytes": len(img), "sha256": hashlib.sha256(img).hexdigest()}
                tw.write({"__key__": key, "jpg": img, "txt": text, "json": json.dumps(row).encode()})
                shard_rows.append(row)
        pq.write_table(schemas.conform(pa.Table.from_pylist(shard_rows), schemas.SHARD_METADATA), folder / f"{name}.parquet")
        rows += shard_rows
    assert sorted(p.name for p in folder.glob("*.tar")) == ["099999.tar", "100000.tar"]
    write_scores(tmp_path / "scores", rows, {r["key"]: 0.5 + 0.01 * k for k, r in enumerate(rows)})
    stats = run_select(cfg_for(tmp_path, threshold=0.0, shard_size=4), spark)
    manifest, sizes = read_final(tmp_path / "final")
    assert stats["output_rows"] == 6 and sizes == {"00000.tar": 4, "00001.tar": 2}
    assert {m["source_key"] for m in manifest} == {r["key"] for r in rows} == {
        "0999990", "0999991", "0999992", "1000000", "1000001", "1000002"}
    urls = [str(tmp_path / "final" / n) for n in sorted(sizes)]
    assert {g["txt"].decode() for g in wds.WebDataset(urls, shardshuffle=False)} == {r["text"] for r in rows}

    # Past 100,000 final shards the same rule widens final names (and keys) to 6 digits.
    from pyspark.sql import functions as F

    got = spark.range(1).select(*(shard_name_column(F.lit(s), n).alias(f"c{k}") for k, (s, n) in enumerate(
        [(7, 3), (99_999, 100_000), (7, 100_001), (100_000, 100_001), (123_456, 1_000_001)]))).first()
    assert list(got) == ["00007", "99999", "000007", "100000", "0123456"]


def test_skip_complete_and_missing_input(pool, spark, tmp_path, capsys, monkeypatch):
    src, _, _ = pool
    cfg = cfg_for(tmp_path, top_fraction=0.5, shard_size=100)
    run_select(cfg, spark, input=str(src / "shards"), scores=str(src / "scores"))
    mtime = (tmp_path / "final" / "manifest.parquet").stat().st_mtime_ns
    d = run_select(cfg, spark, input=str(src / "shards"), scores=str(src / "scores"))
    assert d["output_rows"] == 15 and (tmp_path / "final" / "manifest.parquet").stat().st_mtime_ns == mtime

    from pipeline import cli

    assert cli.main(["select", "-o", str(tmp_path / "nothing")]) == 2
    assert "download shards not found" in capsys.readouterr().err


# --- the valley rule: the CLIP cut read off the score histogram ------------------------------------


def _hist(scores, bins=100):
    import numpy as np

    counts, edges = np.histogram(scores, bins=bins)
    return counts, float(edges[0]), float(edges[-1])


def test_valley_cut_finds_the_dip_between_two_modes():
    """Unrelated captions score low, matching ones high: the cut is at the dip between the modes."""
    import numpy as np

    from pipeline.select import valley_cut

    rng = np.random.default_rng(0)
    for low_share in (0.3, 0.6):  # either mode may be the larger
        n_low = int(2000 * low_share)
        scores = np.concatenate([rng.normal(0.10, 0.03, n_low), rng.normal(0.32, 0.04, 2000 - n_low)])
        v = valley_cut(*_hist(scores))
        assert v["found"] and v["reason"] == "valley between two modes"
        assert 0.16 < v["threshold"] < 0.24, v
        assert abs(v["modes"][0] - 0.10) < 0.03 and abs(v["modes"][1] - 0.32) < 0.03
        assert abs(v["share_below"] - low_share) < 0.03
        assert v["valley_ratio"] <= 0.9


def test_valley_cut_without_a_valley_says_why():
    """One mode, a shoulder too shallow to be a valley, or too few scores: no cut, and the reason."""
    import numpy as np

    from pipeline.select import valley_cut

    rng = np.random.default_rng(1)
    one = valley_cut(*_hist(rng.normal(0.2, 0.05, 2000)))
    assert not one["found"] and one["threshold"] is None and "mode" in one["reason"]
    # two modes so close that the dip between them is no valley
    near = valley_cut(*_hist(np.concatenate([rng.normal(0.18, 0.04, 1000), rng.normal(0.22, 0.04, 1000)])))
    assert not near["found"] and near["threshold"] is None
    few = valley_cut(*_hist(rng.normal(0.2, 0.05, 20)))
    assert not few["found"] and "too few" in few["reason"]
    flat = valley_cut([0] * 99 + [500], 0.3, 0.3)
    assert not flat["found"]


def test_select_valley_rule_and_its_fallback(spark, tmp_path):
    """threshold_rule valley keeps the high mode and reports the cut; on one-mode scores it falls back
    to top_fraction and says so in the stats."""
    import numpy as np

    rng = np.random.default_rng(2)
    bimodal = np.concatenate([rng.normal(0.1, 0.02, 50), rng.normal(0.4, 0.02, 30)]).tolist()
    samples = [{"text": f"caption {i}", "image": jpeg(48, 48, 500 + i), "width": 300, "height": 300} for i in range(80)]
    rows = write_shards(tmp_path / "shards", samples, shard_size=40)
    for name, scores in (("bimodal", bimodal), ("unimodal", rng.normal(0.2, 0.03, 80).tolist())):
        write_scores(tmp_path / name / "scores", rows, {r["key"]: s for r, s in zip(rows, scores, strict=True)})
        cfg = cfg_for(tmp_path / name, threshold_rule="valley", top_fraction=0.25, near_dup=False, dedup_images=False)
        stats = run_select(cfg, spark, input=str(tmp_path / "shards"), scores=str(tmp_path / name / "scores"))
        extra, kept = stats["extra"], {m["uid"] for m in read_final(tmp_path / name / "final")[0]}
        assert extra["threshold_rule"] == "valley" and extra["threshold"] is None
        if name == "bimodal":
            assert extra["valley"]["found"] and 0.15 < extra["cutoff"] < 0.35 and extra["top_fraction"] is None
            assert kept == {r["uid"] for r, s in zip(rows, scores, strict=True) if s > 0.25}
        else:
            assert not extra["valley"]["found"] and extra["valley"]["fallback"] == "top_fraction 0.25"
            assert extra["top_fraction"] == 0.25 and stats["output_rows"] == 20
