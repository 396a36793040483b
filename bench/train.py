"""Training throughput: `wit train` from local shards vs the model alone vs open_clip's own trainer.

Three figures from one run, same model, batch, precision, shards and loader workers:
- synthetic: forward + backward + AdamW on tensors already on the device (the ceiling);
- ours: ``jobs/train.py`` (our loop) reading webdataset shards; samples/s and data-wait share;
- open_clip: ``open_clip_train.main --dataset-type webdataset --dataset-resampled`` on the same shards.
Steady state only: the first ``WARM`` steps of each run are left out.

  python -m bench train                  # CPU: wit-tiny, small
  python -m bench train --device cuda    # GPU: ViT-B-32, batch 512, bf16 (< 4 min, self-contained)
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
WORDS = "red green blue yellow circle square triangle star small large two three on a the background of with".split()


def _write_shard(args) -> str:
    """One shard of photo-like 256-px JPEGs (smooth colour fields + noise) with word-salad captions."""
    import webdataset as wds
    from PIL import Image

    folder, shard, n = args
    rng = np.random.default_rng(shard)
    path = f"{folder}/{shard:05d}.tar"
    with wds.TarWriter(path) as w:
        for i in range(n):
            low = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((256, 256), Image.BICUBIC)
            arr = np.asarray(low, dtype=np.int16) + rng.integers(-12, 13, (256, 256, 3), dtype=np.int16)
            buf = io.BytesIO()
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 12))))
            w.write({"__key__": f"{shard:05d}{i:04d}", "jpg": buf.getvalue(), "txt": text, "json": json.dumps({"keep_prob": 1.0})})
    return path


def _env() -> dict:
    """Child processes import this checkout's pipeline/ (also where it is not pip-installed)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def make_shards(folder: str, n_shards: int, per_shard: int) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    with Pool(min(n_shards, os.cpu_count() or 1)) as pool:
        return pool.map(_write_shard, [(folder, s, per_shard) for s in range(n_shards)])


def synthetic(model_name: str, batch: int, steps: int, warm: int, device: str) -> dict:
    """Step time of the model alone: random images and tokens already on the device."""
    import torch
    from open_clip.loss import ClipLoss

    from pipeline.models import load_clip
    from pipeline.train import param_groups

    model, _, _ = load_clip(model_name, None, device)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, 0.2), lr=5e-4, betas=(0.9, 0.98), eps=1e-6)
    size = model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    images = torch.randn(batch, 3, size, size, device=device)
    texts = torch.randint(1, 49000, (batch, model.context_length), device=device)
    loss_fn = ClipLoss()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for i in range(warm + steps):
        if i == warm:
            sync()
            t0 = time.perf_counter()
        with autocast:
            f_i, f_t, scale = model(images, texts)
            loss = loss_fn(f_i, f_t, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    step_s = (time.perf_counter() - t0) / steps
    del model, opt
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"step_s": step_s, "samples_per_s": batch / step_s}


def ours(shards: str, out: str, model: str, batch: int, steps: int, warm: int, workers: int, device: str,
         where: str = "auto") -> dict:
    cmd = [sys.executable, str(ROOT / "jobs" / "train.py"), "-o", out, "--set", f"train.data={shards}",
           "--set", f"train.model={model}", "--set", f"train.batch_size={batch}", "--set", f"train.steps={steps}",
           "--set", f"train.num_workers={workers}", "--set", f"train.device={device}", "--set", "train.log_every=5",
           "--set", f"train.checkpoint_every={steps}", "--set", f"train.eval_dir={out}/no-eval", "--set", "train.lr=5e-4",
           "--set", "train.warmup_steps=10", "--set", f"train.gpu_preprocess={where}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=_env())
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in open(f"{out}/train/metrics.jsonl")]
    steady = [r for r in rows if r["step"] > warm]
    sps = len(steady) and sum(r["samples_per_s"] for r in steady) / len(steady)
    wait = len(steady) and sum(r["data_wait"] for r in steady) / len(steady)
    return {"samples_per_s": sps, "data_wait": wait, "wall_s": wall, "loss_last": rows[-1]["loss"]}


def loader_only(shards: str, model_name: str, batch: int, workers: int, batches: int, where: str) -> float:
    """Samples/s our loader workers sustain alone (no model), once the batches they prefetched
    while starting are used up: what the loop can be fed in a long run. ``where`` = "decode":
    workers send JPEG bytes + crop boxes (the device's decoding is not counted here)."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from pipeline.image_decode import split_preprocess
    from pipeline.models import register_models
    from pipeline.shard_data import TrainStream, device_crop_of, make_loader, shard_urls

    register_models()
    cfg = open_clip.get_model_config(model_name)["vision_cfg"]
    pre = split_preprocess(image_transform_v2(PreprocessCfg(size=cfg.get("image_size", 224)), is_train=True))[0]
    crop = device_crop_of(pre) if where == "decode" else None
    stream = TrainStream(shard_urls(shards), pre, open_clip.get_tokenizer(model_name), batch, device_crop=crop)
    it = iter(make_loader(stream, workers, pin_memory=False))
    for _ in range(workers * 5 if workers else 1):  # past what the workers prefetch (4 each) while starting
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - t0)


OPENCLIP_LINE = re.compile(r"Train Epoch: \d+ \[\s*(\d+)/.*Data \(t\): ([\d.]+) Batch \(t\): ([\d.]+), ([\d.]+)/s")


def open_clip_baseline(shards_pattern: str, logs: str, model: str, batch: int, steps: int, warm: int,
                       workers: int, device: str) -> dict:
    """open_clip's own trainer on the same shards (our tiny config registered first, for CPU runs)."""
    args = ["--train-data", shards_pattern, "--dataset-type", "webdataset", "--dataset-resampled",
            "--train-num-samples", str(batch * steps), "--batch-size", str(batch), "--epochs", "1",
            "--model", model, "--workers", str(workers), "--precision", "amp_bf16" if device == "cuda" else "fp32",
            "--lr", "5e-4", "--warmup", "10", "--log-every-n-steps", "5", "--logs", logs, "--name", "bench",
            "--save-frequency", "0", "--report-to", "", "--local-loss", "--gather-with-grad", "--seed", "0"]
    if device != "cuda":
        args += ["--device", "cpu"]
    # open_clip_train 3.3's tar grouping predates webdataset's end-of-shard marker ({}): turn it off.
    code = ("import sys, functools; from pipeline.models import register_models; register_models(); "
            "import open_clip_train.data as d; d.tar_file_expander = functools.partial(d.tar_file_expander, eof_value=None); "
            "from open_clip_train.main import main; main(sys.argv[1:])")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          env=_env())
    wall = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        print(log[-3000:], file=sys.stderr)
        return {"error": f"exit {proc.returncode}", "wall_s": wall}
    rows = [(int(n) // batch, float(d), float(b), float(s)) for n, d, b, s in OPENCLIP_LINE.findall(log)]
    steady = [r for r in rows if r[0] > warm]
    if not steady:
        return {"error": "no progress lines parsed", "wall_s": wall, "log_tail": log[-1500:]}
    return {
        "samples_per_s": sum(r[3] for r in steady) / len(steady),
        "data_wait": sum(r[1] / r[2] for r in steady) / len(steady),
        "wall_s": wall,
    }


def main(quick: bool = False, device: str = "cpu") -> dict:
    import torch

    os.environ.setdefault("WANDB_MODE", "disabled")
    device = "cuda" if device in ("cuda", "gpu") or (device == "auto" and torch.cuda.is_available()) else "cpu"
    if device == "cuda":  # warm: past the 14 workers × 4 batches prefetched while the model loads
        model, batch, steps, warm, n_shards, per_shard = "ViT-B-32", 512, 160 if not quick else 80, 60, 16, 1000
        workers = max(1, min(14, (os.cpu_count() or 2) - 2))
    else:
        torch.set_num_threads(2)
        model, batch, steps, warm, n_shards, per_shard = "wit-tiny", 32, 30 if not quick else 15, 5, 2, 300
        workers = 1
    tmp = tempfile.mkdtemp(prefix="bench-train-")
    t0 = time.perf_counter()
    make_shards(f"{tmp}/shards", n_shards, per_shard)
    gen_s = time.perf_counter() - t0
    print(f"shards: {n_shards}×{per_shard} in {gen_s:.1f}s", flush=True)
    syn = synthetic(model, batch, 10 if device == "cuda" else 5, 3, device)
    print(f"synthetic: {syn['samples_per_s']:.1f} samples/s ({syn['step_s'] * 1000:.1f} ms/step)", flush=True)
    feed = {where: loader_only(f"{tmp}/shards", model, batch, workers, 20 if device == "cuda" else 4, where)
            for where in ("decode", "none")}
    print(f"loader workers alone, sustained: {feed['decode']:.1f} samples/s sending JPEGs to the device, "
          f"{feed['none']:.1f} decoding + cropping themselves", flush=True)
    our = ours(f"{tmp}/shards", f"{tmp}/ours", model, batch, steps, warm, workers, device)
    print(f"ours: {our['samples_per_s']:.1f} samples/s, data-wait {our['data_wait']:.1%}", flush=True)
    pattern = f"{tmp}/shards/{{00000..{n_shards - 1:05d}}}.tar"
    oc = open_clip_baseline(pattern, f"{tmp}/oc", model, batch, steps, warm, workers, device)
    print(f"open_clip_train: {oc.get('samples_per_s', 0):.1f} samples/s, data-wait {oc.get('data_wait', 0):.1%} {oc.get('error', '')}", flush=True)
    cpu_path = None
    if device == "cuda":  # our loop with the images decoded + cropped in the workers, as open_clip does
        cpu_path = ours(f"{tmp}/shards", f"{tmp}/ours-cpu", model, batch, steps, warm, workers, device, "none")
        print(f"ours, gpu_preprocess=none: {cpu_path['samples_per_s']:.1f} samples/s, data-wait {cpu_path['data_wait']:.1%}", flush=True)
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    result = {
        "device": device, "gpu": gpu, "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "torch": torch.__version__, "model": model, "batch_size": batch, "steps": steps, "warm_steps_excluded": warm,
        "loader_workers": workers, "precision": "bf16" if device == "cuda" else "fp32",
        "synthetic": syn, "loader_workers_alone_samples_per_s": feed, "ours": our, "open_clip_train": oc,
        "ours_gpu_preprocess_none": cpu_path,
        "ours_vs_synthetic": our["samples_per_s"] / syn["samples_per_s"],
        "ours_vs_open_clip": our["samples_per_s"] / oc["samples_per_s"] if oc.get("samples_per_s") else None,
        "quick": quick,
    }
    print(f"ours/synthetic {result['ours_vs_synthetic']:.2f}×, ours/open_clip "
          f"{result['ours_vs_open_clip'] or float('nan'):.2f}×, our data-wait {our['data_wait']:.1%}")
    name = "train_gpu.json" if device == "cuda" else "train.json"
    out = ROOT / "bench" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    if os.environ.get("OUT"):  # the device machine's folder of files that come back
        Path(os.environ["OUT"], name).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    main(quick=a.quick, device=a.device)
