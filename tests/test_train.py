"""The bundled CLIP trainer and evaluation: learning on the sample web, resume, checkpoints, bad data."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
wds = pytest.importorskip("webdataset")
torch.set_num_threads(2)

from pipeline.config import load_config  # noqa: E402
from pipeline.errors import UserError  # noqa: E402
from pipeline.eval import run_eval  # noqa: E402
from pipeline.stats import read_stats  # noqa: E402
from pipeline.train import lr_at, param_groups, run_train  # noqa: E402


def write_shards(samples: list[dict], folder: Path, per_shard: int = 400) -> Path:
    """Webdataset shards in img2dataset's layout (key.jpg/png/webp + key.txt + key.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(samples), per_shard):
        shard = start // per_shard
        with wds.TarWriter(str(folder / f"{shard:05d}.tar")) as w:
            for i, s in enumerate(samples[start : start + per_shard]):
                w.write({"__key__": f"{shard:05d}{i:04d}", **s})
    return folder


@pytest.fixture(scope="module")
def sample_web(tmp_path_factory) -> Path:
    from pipeline.sample_web import generate_sample_web

    out = tmp_path_factory.mktemp("train") / "sample"
    generate_sample_web(str(out), n_pairs=1500, seed=0)
    return out


@pytest.fixture(scope="module")
def web_shards(sample_web: Path) -> Path:
    """The sample web's downloadable images with their true captions, as training shards."""
    import pyarrow.parquet as pq

    gt = pq.read_table(sample_web / "ground_truth.parquet").to_pylist()
    seen, samples = set(), []
    for r in gt:
        p = r["image_path"]
        if r["expected_status"] != "success" or not p or p in seen or not (sample_web / "site" / p).is_file():
            continue
        seen.add(p)
        ext = p.rsplit(".", 1)[-1]
        samples.append({ext: (sample_web / "site" / p).read_bytes(), "txt": r["true_caption"],
                        "json": json.dumps({"uid": r["url"], "keep_prob": 1.0})})
    return write_shards(samples, sample_web.parent / "shards")


def config(out: Path, data: Path, **train) -> object:
    ov = {"output_dir": str(out), "train.data": str(data), "train.eval_dir": str(out / "no-eval")}
    ov.update({f"train.{k}": v for k, v in train.items()})
    return load_config(None, ov)


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_training_on_the_sample_web_learns(sample_web, web_shards, tmp_path):
    cfg = config(tmp_path, web_shards, model="wit-tiny", batch_size=32, steps=60, lr=1e-3, warmup_steps=6,
                 num_workers=1, log_every=5, checkpoint_every=1000,
                 eval_dir=[str(sample_web / "eval"), str(sample_web / "eval_background")])
    summary = run_train(cfg)
    out = tmp_path / "train"
    assert (out / "_SUCCESS").exists() and (out / "checkpoints" / "epoch_latest.pt").is_file()
    assert json.loads((out / "summary.json").read_text())["steps"] == 60
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(5, 61, 5))
    for key in ("loss", "lr", "logit_scale", "samples_per_s", "data_wait"):
        assert all(math.isfinite(r[key]) for r in rows), key
    # Loss decreases well below the untrained ln(batch) ≈ 3.47.
    assert summary["loss_first"] > 3.0 and rows[-1]["loss_avg"] < 0.7 * summary["loss_first"]
    # Retrieval on the held-out pairs is far above chance (1/200 for R@1, 5/200 for R@5).
    r = summary["eval"]["retrieval"]
    assert r["n_images"] == 200
    assert r["image_to_text_R@5"] >= 3 * 5 / 200 and r["text_to_image_R@5"] >= 3 * 5 / 200
    assert r["image_to_text_R@10"] >= r["image_to_text_R@5"] >= r["image_to_text_R@1"]
    # Zero-shot on the shape split (8 classes) is computed but stays near chance at this budget: colour and
    # background tell almost every in-batch pair apart, so the loss barely needs shape (issue 8 notes).
    z = summary["eval"]["zeroshot"]
    assert z["n_classes"] == 8 and z["n_images"] == 200
    assert 0 <= z["top1"] <= z["top5"] <= 1
    # Background colour is learned within these 60 steps: zero-shot from the class names alone ("red
    # background" × templates) is far above chance on the split labelled by it (chance 0.1).
    splits = summary["eval"]["zeroshot_splits"]
    assert list(splits) == ["eval", "eval_background"] and splits["eval"] == z
    bg = splits["eval_background"]
    assert bg["n_classes"] == 10 and bg["n_images"] == 250
    assert bg["top1"] >= 3 * bg["chance_top1"], bg


@pytest.fixture(scope="module")
def short_run(web_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("short")
    cfg = config(out, web_shards, batch_size=8, steps=8, warmup_steps=2, num_workers=2, log_every=1,
                 checkpoint_every=3, shuffle_buffer=50)
    return cfg, run_train(cfg)


def test_resume_continues_the_same_run(web_shards, short_run, tmp_path):
    cfg_full, full = short_run
    cfg = config(tmp_path, web_shards, **{k: getattr(cfg_full.train, k) for k in (
        "batch_size", "steps", "warmup_steps", "num_workers", "log_every", "checkpoint_every", "shuffle_buffer")})
    stopped = run_train(cfg, stop_after=5)  # interrupted after step 5 (an odd step: worker streams rotate)
    assert stopped["steps"] == 5 and not (tmp_path / "train" / "_SUCCESS").exists()
    resumed = run_train(cfg, resume=True)
    assert resumed["steps"] == 8 and (tmp_path / "train" / "_SUCCESS").exists()

    a = torch.load(Path(cfg_full.path("train")) / "checkpoints" / "epoch_latest.pt", weights_only=True)
    b = torch.load(tmp_path / "train" / "checkpoints" / "epoch_latest.pt", weights_only=True)
    assert a["step"] == b["step"] == 8
    assert len(b["loss_curve"]) == 8
    assert torch.allclose(torch.tensor(a["loss_curve"]), torch.tensor(b["loss_curve"]), rtol=1e-4, atol=1e-5)
    for k in a["state_dict"]:
        assert torch.allclose(a["state_dict"][k], b["state_dict"][k], rtol=1e-3, atol=1e-5), k
    ra, rb = read_metrics(Path(cfg_full.output_dir)), read_metrics(tmp_path)
    assert [r["step"] for r in rb] == list(range(1, 9))  # each step logged once
    assert [r["lr"] for r in ra] == [r["lr"] for r in rb]


def test_checkpoint_keeps_step_and_epoch_apart_and_old_checkpoints_resume(web_shards, short_run, tmp_path):
    """The step is ``step``; ``epoch`` is open_clip's count of finished epochs (a run is one). A
    checkpoint written before that (the step only under ``epoch``) resumes at its step."""
    cfg_full, _ = short_run
    full = torch.load(Path(cfg_full.path("train")) / "checkpoints" / "epoch_latest.pt", weights_only=True)
    assert full["step"] == 8 and full["epoch"] == 1
    cfg = config(tmp_path, web_shards, **{k: getattr(cfg_full.train, k) for k in (
        "batch_size", "steps", "warmup_steps", "num_workers", "log_every", "checkpoint_every", "shuffle_buffer")})
    run_train(cfg, stop_after=3)
    path = tmp_path / "train" / "checkpoints" / "epoch_latest.pt"
    ck = torch.load(path, weights_only=True)
    assert ck["step"] == 3 and ck["epoch"] == 0
    del ck["step"]
    ck["epoch"] = 3
    torch.save(ck, path)
    resumed = run_train(cfg, resume=True)
    assert resumed["steps"] == 8 and (tmp_path / "train" / "_SUCCESS").exists()
    again = torch.load(path, weights_only=True)
    assert torch.allclose(torch.tensor(again["loss_curve"]), torch.tensor(full["loss_curve"]), rtol=1e-4, atol=1e-5)
    assert [r["step"] for r in read_metrics(tmp_path)] == list(range(1, 9))


def test_resume_without_a_checkpoint_is_a_user_error(web_shards, tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        run_train(config(tmp_path, web_shards, steps=2, batch_size=4), resume=True)


def test_checkpoint_loads_with_open_clip_and_load_clip(short_run):
    import open_clip

    from pipeline.models import load_clip

    cfg, summary = short_run
    ckpt = summary["checkpoint"]
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    model, _, preprocess = open_clip.create_model_and_transforms("wit-tiny", pretrained=ckpt)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    model2, preprocess2, tokenizer = load_clip("wit-tiny", ckpt, "cpu")
    assert torch.equal(model2.logit_scale, saved["logit_scale"])
    with torch.no_grad():
        f = model2.encode_text(tokenizer(["a red circle"]), normalize=True)
    assert f.shape == (1, 128)


def test_a_complete_run_is_skipped_unless_overwrite(short_run):
    cfg, summary = short_run
    again = run_train(cfg)
    assert again["steps"] == summary["steps"] and again["checkpoint"] == summary["checkpoint"]


@pytest.mark.parametrize("gpu_preprocess", ["none", "decode"])
def test_bad_samples_are_skipped_and_counted_and_online_balancing(tmp_path, gpu_preprocess):
    from PIL import Image

    def jpg(colour):
        buf = io.BytesIO()
        Image.new("RGB", (40, 40), colour).save(buf, "JPEG")
        return buf.getvalue()

    good = [{"jpg": jpg((i * 20, 0, 0)), "txt": f"red {i}", "json": json.dumps({"keep_prob": 1.0})} for i in range(8)]
    bad = [
        {"jpg": b"not a jpeg", "txt": "broken"},
        {"jpg": jpg("blue"), "txt": "   "},
        {"txt": "no image at all"},
        {"jpg": jpg("green"), "txt": "never kept", "json": json.dumps({"keep_prob": 0.0})},
    ]
    shards = write_shards(good + bad, tmp_path / "shards")
    cfg = config(tmp_path, shards, batch_size=4, steps=4, warmup_steps=1, num_workers=0, online_balancing=True,
                 shuffle_buffer=0, gpu_preprocess=gpu_preprocess)
    summary = run_train(cfg)
    assert summary["drops"]["decode_error"] >= 1
    assert summary["drops"]["missing_text"] >= 1
    assert summary["drops"]["missing_image"] >= 1
    assert summary["drops"]["balancing"] >= 1
    stats = read_stats(str(tmp_path / "train"))
    assert stats["drops"] == summary["drops"] and stats["input_rows"] == 16


def _jpeg(w: int, h: int, seed: int, mode: str = "RGB") -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, len(mode))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_device_decoding_matches_the_workers_and_drops_what_no_decoder_reads(tmp_path):
    """gpu_preprocess=decode: complete JPEGs travel as bytes with the crop box the workers draw, and
    the device (torchvision's CPU kernels stand in for the GPU's here) decodes and crops them. Same
    samples, same crops, same drops as the worker path; other images still decode in the workers."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from pipeline.image_decode import pack_blobs, split_preprocess
    from pipeline.shard_data import TrainStream, device_batch, device_crop_of

    good = _jpeg(60, 44, 1)
    samples = [{"jpg": good[: len(good) // 2], "txt": "truncated"}, {"jpg": b"\xff\xd8 junk \xff\xd9", "txt": "junk"}]
    samples += [{"jpg": _jpeg(40 + 9 * i, 70 - 5 * i, i), "txt": f"photo {i}"} for i in range(6)]
    samples += [{"jpg": _jpeg(48, 40, 9, "CMYK"), "txt": "cmyk photo"}, {"jpg": _jpeg(36, 52, 10, "L"), "txt": "grey photo"}]
    urls = [str(write_shards(samples, tmp_path / "shards") / "00000.tar")]
    pre, normalize = split_preprocess(image_transform_v2(PreprocessCfg(size=32), is_train=True))
    crop = device_crop_of(pre)
    tok = open_clip.get_tokenizer("ViT-B-32")
    n = 8  # the usable samples: 6 RGB + CMYK + grey

    def first_batch(device_crop):
        return next(iter(TrainStream(urls, pre, tok, n, shuffle_buffer=0, device_crop=device_crop)))

    workers, device = first_batch(None), first_batch(crop)
    assert workers[2]["drops"] == device[2]["drops"] == {"decode_error": 2}  # truncated, junk: the workers decide
    assert len(device[0]["ready"]) == 1 and len(device[0]["boxes"]) == 7  # CMYK decodes in the workers
    xw, tw, dw = device_batch(workers, torch.device("cpu"), normalize)
    xd, td, dd = device_batch(device, torch.device("cpu"), normalize, crop)
    assert dw == dd == 0 and xw.shape == xd.shape == (n, 3, 32, 32)
    order = {tuple(t.tolist()): i for i, t in enumerate(tw)}
    for j, t in enumerate(td):  # same caption → same image, the same crop up to interpolation rounding
        i = order[tuple(t.tolist())]
        assert (xw[i] - xd[j]).abs().mean() < 0.02, (i, j)

    # An image that passed the workers' checks but that no decoder reads: dropped with its caption.
    batch = ({"ready": None, "jpegs": pack_blobs([good, b"\xff\xd8 junk \xff\xd9"]),
              "boxes": torch.tensor([[0, 0, 44, 60], [0, 0, 10, 10]])}, tok(["kept", "dropped"]), {})
    x, tokens, dropped = device_batch(batch, torch.device("cpu"), normalize, crop)
    assert dropped == 1 and x.shape == (1, 3, 32, 32) and torch.equal(tokens, tok(["kept"]))


def test_no_shards_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no webdataset shards"):
        run_train(config(tmp_path, tmp_path / "empty", steps=1))


def test_schedule_and_weight_decay_groups():
    assert lr_at(0, 1e-3, 10, 100) == pytest.approx(1e-4)
    assert lr_at(9, 1e-3, 10, 100) == pytest.approx(1e-3)
    assert lr_at(55, 1e-3, 10, 100) == pytest.approx(5e-4)
    assert lr_at(100, 1e-3, 10, 100) == pytest.approx(0.0, abs=1e-12)
    from pipeline.models import load_clip

    model, _, _ = load_clip("wit-tiny", None, "cpu")
    no_decay, decay = param_groups(model, 0.2)
    ids = {id(p) for p in no_decay["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in ids}
    assert "logit_scale" in names and all(p.ndim >= 2 for p in decay["params"])
    assert any(n.endswith(".bias") for n in names) and any("ln_" in n for n in names)
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)


def test_eval_defaults_to_every_labelled_split_of_the_sample_web(short_run, sample_web):
    cfg_run, summary = short_run
    cfg = load_config(None, {"output_dir": str(sample_web.parent), "train.batch_size": 8})  # its sample/ is sample_web
    result = run_eval(cfg, input=summary["checkpoint"])
    assert result["eval_dir"] == [str(sample_web / "eval"), str(sample_web / "eval_background")]
    assert {k: v["n_classes"] for k, v in result["zeroshot_splits"].items()} == {"eval": 8, "eval_background": 10}
    assert result["zeroshot"] == result["zeroshot_splits"]["eval"]
    assert result["retrieval"]["n_images"] == 200  # the first folder's pairs.parquet
    # a folder that is missing is skipped with a warning; the first one found is the headline
    missing = run_eval(cfg, input=summary["checkpoint"], eval_dir=[str(sample_web / "nowhere"), str(sample_web / "eval")])
    assert list(missing["zeroshot_splits"]) == ["eval"] and missing["zeroshot"] == missing["zeroshot_splits"]["eval"]
    assert missing["retrieval"]["n_images"] == 200 and missing["pairs"] == str(sample_web / "eval" / "pairs.parquet")
    assert "no labelled folder" in missing["zeroshot_skipped"][str(sample_web / "nowhere")]
    # an unusable folder (no images, or none readable) is skipped with its reason, not a failed run
    empty, junk = sample_web.parent / "empty", sample_web.parent / "junk"
    (empty / "cat").mkdir(parents=True)
    (junk / "cat").mkdir(parents=True)
    (junk / "cat" / "0.jpg").write_bytes(b"not a jpeg")
    bad = run_eval(cfg, input=summary["checkpoint"], eval_dir=[str(empty), str(junk), str(sample_web / "eval_background")])
    assert list(bad["zeroshot_splits"]) == ["eval_background"] and bad["zeroshot"]["n_classes"] == 10
    assert "no images" in bad["zeroshot_skipped"][str(empty)] and "no readable images" in bad["zeroshot_skipped"][str(junk)]
    # two folders with the same name are told apart by their path
    copy = sample_web.parent / "copy" / "eval"
    shutil.copytree(sample_web / "eval", copy)
    twice = run_eval(cfg, input=summary["checkpoint"], eval_dir=[str(sample_web / "eval"), str(copy)])
    assert list(twice["zeroshot_splits"]) == ["eval", str(copy)]
    assert twice["zeroshot_splits"]["eval"]["top1"] == twice["zeroshot_splits"][str(copy)]["top1"]


def test_wit_eval_cli_on_a_checkpoint(short_run, sample_web, capsys):
    from pipeline.cli import main

    cfg, summary = short_run
    rc = main(["eval", summary["checkpoint"], "-o", cfg.output_dir, "--eval-dir", str(sample_web / "eval")])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["zeroshot"]["n_classes"] == 8 and 0 <= result["zeroshot"]["top1"] <= 1
    assert set(result["retrieval"]) >= {f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)}


@pytest.mark.slow
def test_short_run_on_real_coco_photos(shared_data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    coco = shared_data / "coco_mini"

    def pairs(split):
        ann = json.loads((coco / f"captions_{split}2017.json").read_text())
        files = {im["id"]: im["file_name"] for im in ann["images"]}
        return [(coco / f"{split}2017" / files[a["image_id"]], a["caption"]) for a in ann["annotations"]
                if (coco / f"{split}2017" / files[a["image_id"]]).is_file()]

    train = pairs("train")
    samples = [{"jpg": p.read_bytes(), "txt": c} for p, c in train]
    shards = write_shards(samples, tmp_path / "shards", per_shard=200)
    val = pairs("val")
    pq.write_table(pa.table({"image": [str(p) for p, _ in val], "caption": [c for _, c in val]}), tmp_path / "val.parquet")
    cfg = config(tmp_path, shards, batch_size=16, steps=6, warmup_steps=2, num_workers=1, log_every=2,
                 eval_pairs=str(tmp_path / "val.parquet"))
    summary = run_train(cfg)
    assert summary["steps"] == 6 and math.isfinite(summary["loss_last"])
    r = summary["eval"]["retrieval"]
    n_val_images = len({p for p, _ in val})
    assert r["n_images"] == n_val_images and r["n_texts"] == len(val) > n_val_images  # 5 captions per photo
    assert summary["eval"]["zeroshot"] is None  # no labelled folder given
    assert os.path.isfile(summary["checkpoint"])


@pytest.mark.slow
def test_ddp_under_torchrun_gathers_features_across_ranks(web_shards, tmp_path, port):
    """Two CPU ranks (gloo): both train, rank 0 writes one checkpoint with both ranks' data positions."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(repo / "jobs" / "train.py"), "-o", str(tmp_path), "--input", str(web_shards),
           "--set", "train.steps=2", "--set", "train.batch_size=4", "--set", "train.num_workers=0",
           "--set", f"train.eval_dir={tmp_path / 'no-eval'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-8000:]  # the failed rank's traceback precedes torchrun's summary
    ck = torch.load(tmp_path / "train" / "checkpoints" / "epoch_latest.pt", weights_only=True)
    assert ck["step"] == 2 and ck["data"]["world_size"] == 2 and len(ck["data"]["positions"]) == 2
    assert json.loads((tmp_path / "train" / "summary.json").read_text())["batch_size"] == 8
