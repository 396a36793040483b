"""`wit train`: contrastive pre-training of an open_clip model on webdataset shards, in one loop.

The CLIP recipe, nanoGPT-style: read image/caption pairs from shards (ours or any img2dataset
output), embed both with an open_clip model, and minimise the symmetric cross-entropy of the
image↔text similarity matrix scaled by a learnable temperature. Multi-GPU runs start under
torchrun; features are gathered across ranks with open_clip's local-loss + gather-with-grad scheme.

Outputs under ``output_dir/train/``: ``checkpoints/epoch_latest.pt`` (periodic and final; loads with
``open_clip.create_model_and_transforms(name, pretrained=path)``), ``metrics.jsonl`` (one row per
logged step), ``summary.json`` (final loss, speed, zero-shot and retrieval numbers), ``_stats.json``.

Resuming continues the same run: model, optimiser, step (the lr follows from it), loss curve and
the data position. Every data-loader worker reads its own seeded stream and reports how many raw
samples it consumed, so a resumed run skips exactly those (before decoding) and sees the same
batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import time
from collections import Counter
from contextlib import nullcontext
from typing import Any

from pipeline import storage
from pipeline.cli import flag
from pipeline.config import RunConfig, join_path
from pipeline.errors import UserError
from pipeline.ids import hash_to_unit
from pipeline.log import info, warn
from pipeline.stats import StageStats

CHECKPOINT = "epoch_latest.pt"
MAX_LOGIT_SCALE = math.log(100)
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


# ----------------------------------------------------------------------------------------- data


def _seed_int(*parts: object) -> int:
    return int(hash_to_unit(*parts) * 2**62)


def make_shard_stream(urls, preprocess, tokenizer, batch_size, seed=0, shuffle_buffer=1000,
                      online_balancing=False, rank=0, start_step=0, positions=None, device_crop=None):
    """One rank's endless, reproducible stream of (images, tokens, position) batches.

    Resampled shards → samples → shuffle buffer → skip what a resumed run already consumed →
    optional online balancing (keep with the sample's ``keep_prob``) → decode + preprocess →
    batches. Bad samples are skipped and counted by reason in the batch's position record.
    With ``device_crop`` (the transform's RandomResizedCrop), complete JPEGs are not decoded here:
    they travel as bytes with the crop box drawn here, and `device_batch` decodes and crops them
    on the device. ``images`` = {"ready": uint8 [n, H, W, 3] or float, "jpegs": packed bytes,
    "boxes": [m, 4]}; tokens are in that order (ready, then jpegs).
    """
    import torch

    class ShardStream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return _iterate(urls, preprocess, tokenizer, batch_size, seed, shuffle_buffer, online_balancing,
                            rank, start_step, positions or {}, device_crop)

    return ShardStream()


def _iterate(urls, preprocess, tokenizer, batch_size, seed, shuffle_buffer, online_balancing, rank, start_step, positions,
             device_crop):
    import torch
    import webdataset as wds
    from webdataset.filters import _shuffle

    from pipeline.gpu_feed import pack_blobs

    wi = torch.utils.data.get_worker_info()
    worker, n_workers = (wi.id, wi.num_workers) if wi else (0, 1)
    # DataLoader hands out batches round-robin from worker 0; after resuming at step s, worker 0
    # must continue the stream that an uninterrupted run would have used for step s.
    stream = (worker + start_step) % n_workers
    skip = int(positions.get(str(stream), 0))
    stream_seed = _seed_int(seed, rank, stream, n_workers)
    drops: Counter = Counter()

    def count_error(exn: Exception) -> bool:
        drops["read_error"] += 1
        return True

    def shards():  # resampled forever: stop if they hold no samples at all instead of spinning
        for n, shard in enumerate(wds.ResampledShards(urls, seed=stream_seed, worker_seed=lambda: 0, deterministic=True)):
            if n >= 10 * len(urls) + 100 and raw == 0:
                raise UserError(f"the shards at {urls[0]} … hold no samples ({dict(drops)})")
            yield shard

    samples = wds.tarfile_to_samples(handler=count_error)(shards())
    if shuffle_buffer > 1:
        samples = _shuffle(samples, shuffle_buffer, shuffle_buffer, rng=random.Random(stream_seed))
    raw = kept = 0
    images, texts, jpegs, boxes, jpeg_texts = [], [], [], [], []
    for sample in samples:
        raw += 1
        if raw <= skip:
            continue
        if kept == 0 and raw - skip >= 5000:
            raise UserError(f"no usable image/text sample among the first 5000 read from {urls[0]} …: {dict(drops)}")
        if online_balancing and hash_to_unit(stream_seed, raw) >= _keep_prob(sample):
            drops["balancing"] += 1
            continue
        aug_seed = _seed_int(stream_seed, raw)
        try:
            key, text = _image_and_text(sample)
            job = _jpeg_for_device(sample[key], device_crop, aug_seed) if device_crop is not None else None
            if job is None:
                images.append(_decode(sample[key], preprocess, aug_seed))
                texts.append(text)
            else:
                jpegs.append(job[0])
                boxes.append(job[1])
                jpeg_texts.append(text)
        except _BadSample as e:
            drops[str(e)] += 1
            continue
        kept += 1
        if len(images) + len(jpegs) == batch_size:
            position = {"stream": stream, "raw": raw, "drops": dict(drops), "kept": kept}
            batch = {"ready": torch.stack(images) if images else None, "jpegs": pack_blobs(jpegs) if jpegs else None,
                     "boxes": torch.tensor(boxes, dtype=torch.int64) if boxes else None}
            yield batch, tokenizer(texts + jpeg_texts), position
            images, texts, jpegs, boxes, jpeg_texts = [], [], [], [], []


class _BadSample(Exception):
    """A sample that cannot be trained on; the message is the drop reason."""


def _keep_prob(sample: dict) -> float:
    try:
        return float(json.loads(sample["json"]).get("keep_prob", 1.0))
    except Exception:  # noqa: BLE001 - no or bad metadata: keep the sample
        return 1.0


def _image_and_text(sample: dict) -> tuple[str, str]:
    """The sample's image key and caption, or the reason it cannot be trained on."""
    key = next((k for k in IMAGE_KEYS if k in sample), None)
    if key is None:
        raise _BadSample("missing_image")
    text = sample.get("txt", b"").decode("utf-8", "replace").strip()
    if not text:
        raise _BadSample("missing_text")
    return key, text


def _decode(data: bytes, preprocess, aug_seed: int):
    import io

    import torch
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        img = img.convert("RGB")
    except Exception:  # noqa: BLE001 - any undecodable image is one counted drop
        raise _BadSample("decode_error") from None
    # Seed the augmentation by the sample's position: a resumed run crops exactly the same way.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(aug_seed)
        out = preprocess(img)
    if isinstance(out, Image.Image):  # the PIL half of a split preprocess: ship uint8 HWC
        import numpy as np

        out = torch.from_numpy(np.array(out, dtype=np.uint8))
    return out


def _jpeg_for_device(data: bytes, crop, aug_seed: int):
    """(JPEG bytes, crop box (top, left, height, width)) for the device to decode and crop, the box
    drawn from the same seed as the CPU path draws it; None where this worker must decode the
    image itself (gpu_feed.jpeg_for_device says which)."""
    import torch

    from pipeline.gpu_feed import jpeg_for_device

    size = jpeg_for_device(data)
    if size is None:
        return None
    shape_only = torch.empty(()).expand(3, size[1], size[0])  # get_params reads only the image's shape
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(aug_seed)
        return data, crop.get_params(shape_only, crop.scale, crop.ratio)


def device_crop_of(pil_part):
    """The RandomResizedCrop the device can run for the workers: open_clip's plain training
    transform is exactly [RandomResizedCrop, MaybeConvertMode]; None for anything else (other
    augmentations stay on the CPU path)."""
    from torchvision import transforms as T

    ts = list(getattr(pil_part, "transforms", []))
    if len(ts) == 2 and isinstance(ts[0], T.RandomResizedCrop) and type(ts[1]).__name__ == "MaybeConvertMode":
        return ts[0]
    return None


def split_preprocess(preprocess):
    """Split open_clip's transform before its ToTensor + Normalize: ``(pil_part, mean, std)`` or None.

    Workers then send uint8 images (4× fewer bytes between processes and to the GPU) and the
    device does the last two steps, with the same arithmetic as torchvision's.
    """
    from torchvision import transforms as T

    ts = list(getattr(preprocess, "transforms", []))
    if len(ts) < 2 or not isinstance(ts[-2], T.ToTensor) or not isinstance(ts[-1], T.Normalize):
        return None
    return T.Compose(ts[:-2]), ts[-1].mean, ts[-1].std


def device_batch(batch, device, mean_std, crop=None):
    """Loader batch → (normalised float images on the device, tokens on the device, images dropped).

    Ready images (uint8 HWC from the workers) get ToTensor's /255 and Normalize here, with the
    same arithmetic as torchvision's; JPEGs are decoded on the device (nvjpeg on a GPU) and cropped
    + resized there with their worker-drawn boxes (torchvision's tensor resized_crop, same
    interpolation and antialiasing). An image no decoder reads is dropped with its caption.
    """
    import torch
    from torchvision.transforms import functional as TF

    from pipeline.gpu_feed import decode_jpegs, unpack_blobs

    images, tokens, _ = batch
    parts, keep = [], []
    ready = images["ready"]
    if ready is not None:
        ready = ready.to(device, non_blocking=True)
        parts.append(ready.permute(0, 3, 1, 2).float() if ready.dtype == torch.uint8 else ready)
        keep += range(len(ready))
    if images["jpegs"] is not None:
        blobs, offset = unpack_blobs(images["jpegs"]), len(keep)
        decoded = decode_jpegs(blobs, device)
        crops = []
        for i, ((top, left, h, w), d) in enumerate(zip(images["boxes"].tolist(), decoded, strict=True)):
            if d is None:
                continue
            crops.append(TF.resized_crop(d.float(), top, left, h, w, list(crop.size), crop.interpolation, antialias=True))
            keep.append(offset + i)
        if crops:
            parts.append(torch.stack(crops).clamp_(0, 255))  # as the uint8 CPU path clamps
    if not parts:
        return None, None, len(tokens)
    x = parts[0] if len(parts) == 1 else torch.cat(parts)
    if ready is None or ready.dtype == torch.uint8:
        mean, std = mean_std
        x = x.div_(255).sub_(mean).div_(std)
    dropped = len(tokens) - len(keep)
    tokens = tokens[keep] if dropped else tokens
    return x, tokens.to(device, non_blocking=True), dropped


def make_loader(dataset, num_workers: int, pin_memory: bool):
    import webdataset as wds

    return wds.WebLoader(
        dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
        prefetch_factor=4 if num_workers else None, persistent_workers=False,
    )


# ------------------------------------------------------------------------------- optimisation


def lr_at(step: int, base_lr: float, warmup: int, total: int) -> float:
    """open_clip's cosine schedule: linear warmup to base_lr, then cosine decay to 0 at `total`."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    e, es = step - warmup, max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(e, es) / es)) * base_lr


def param_groups(model, weight_decay: float) -> list[dict]:
    """open_clip's split: no weight decay on biases, norms, gains, embeddings' scalars, logit scale."""
    def no_decay(n, p):
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": weight_decay},
    ]


# --------------------------------------------------------------------------------- the run


def _dist_setup():
    """(rank, world_size, local_rank) under torchrun, else (0, 1, 0)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, local


def _save(path: str, obj: dict) -> None:
    import torch

    with storage.atomic_path(path) as tmp:
        fs, p = storage.fs_for(tmp)
        with fs.open(p, "wb") as f:
            torch.save(obj, f)


def _load(path: str) -> dict:
    import torch

    fs, p = storage.fs_for(path)
    with fs.open(p, "rb") as f:
        return torch.load(f, map_location="cpu", weights_only=True)


def _truncate_metrics(path: str, step: int) -> None:
    """Drop rows logged after the checkpoint we resume from (a killed run may have logged more)."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path, "w") as f:
        f.writelines(rows)


def run_train(cfg: RunConfig, spark=None, data: str | None = None, out: str | None = None,
              resume: bool | None = None, overwrite: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Train ``cfg.train.model`` on the shards at ``data`` (default output_dir/final); returns the summary.

    ``resume``: None continues an unfinished run found in ``out`` (default output_dir/train), True
    requires one, False starts over. ``stop_after`` stops (as if interrupted) after that step,
    leaving a resumable checkpoint. ``spark`` is unused (training runs on the driver / torchrun).
    """
    import torch
    import torch.distributed as dist
    from open_clip.loss import ClipLoss
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from pipeline.evaluate import evaluate, labelled_folders, shard_urls
    from pipeline.gpu_feed import prefetch
    from pipeline.models import load_clip, resolve_device

    t = cfg.train
    out = out or cfg.path("train")
    data = data or t.data or cfg.path("final")
    ckpt_path = join_path(out, "checkpoints", CHECKPOINT)
    metrics_path = join_path(out, "metrics.jsonl")
    if storage.is_complete(out) and not overwrite:
        info(f"train: {out} is complete (use --overwrite to train again)")
        return storage.read_json(join_path(out, "summary.json"))
    rank, world, local_rank = _dist_setup()
    master = rank == 0
    if overwrite or resume is False:
        if master:
            storage.remove(out)
        if world > 1:
            dist.barrier()
    urls = shard_urls(data)

    device = torch.device("cuda", local_rank) if world > 1 and torch.cuda.is_available() else resolve_device(t.device)
    bf16 = t.precision == "bf16" or (t.precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(t.seed)
    model, preprocess_val, tokenizer = load_clip(t.model, t.pretrained, device, for_training=True)
    model.train()
    preprocess_train = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=True)
    split = split_preprocess(preprocess_train)
    mean_std = None
    if split:
        preprocess_train = split[0]
        mean_std = tuple(torch.tensor(v, device=device).view(-1, 1, 1) for v in split[1:])
    optimizer = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps)

    step, losses, positions = 0, [], [{} for _ in range(world)]
    if storage.exists(ckpt_path) and resume is not False:
        ck = _load(ckpt_path)
        model.load_state_dict(ck["state_dict"])
        optimizer.load_state_dict(ck["optimizer"])
        step, losses = ck["step"], list(ck["loss_curve"])
        if ck["data"]["num_workers"] == t.num_workers and ck["data"]["world_size"] == world:
            positions = ck["data"]["positions"]
        else:
            warn("train: num_workers or world size changed since the checkpoint; the data stream restarts")
        info(f"train: resuming {ckpt_path} at step {step}/{t.steps}")
        if master:
            _truncate_metrics(metrics_path, step)
    elif resume:
        raise UserError(f"nothing to resume: no checkpoint at {ckpt_path}")

    raw_model = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    if t.compile:
        model = torch.compile(model)
    loss_fn = ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True, rank=rank, world_size=world)
    where = t.gpu_preprocess if t.gpu_preprocess != "auto" else "decode" if device.type == "cuda" else "none"
    crop = device_crop_of(preprocess_train) if split and where == "decode" else None
    dataset = make_shard_stream(urls, preprocess_train, tokenizer, t.batch_size, t.seed, t.shuffle_buffer,
                                t.online_balancing, rank, step, positions[rank], device_crop=crop)
    loader = make_loader(dataset, t.num_workers, device.type == "cuda")
    batches = prefetch(loader, functools.partial(device_batch, device=device, mean_std=mean_std, crop=crop), device)
    stream_pos = {int(k): v for k, v in positions[rank].items()}
    drops_by_stream: dict[int, dict] = {}
    device_drops = Counter()  # images the device could not decode (the workers count the rest)

    if master:
        info(f"train: {t.model} on {len(urls)} shard(s) at {data}, {world}×{device}, batch {t.batch_size}×{world}, "
             f"steps {step}→{t.steps}, {'bf16' if bf16 else 'fp32'}")
    t_log, data_wait, n_since, pending = time.perf_counter(), 0.0, 0, []
    t_start, samples_at_start = time.perf_counter(), step * t.batch_size * world
    end = min(t.steps, stop_after) if stop_after else t.steps
    while step < end:
        t0 = time.perf_counter()
        (_, _, pos), (images, texts, dropped) = next(batches)
        data_wait += time.perf_counter() - t0
        stream_pos[pos["stream"]] = pos["raw"]
        drops_by_stream[pos["stream"]] = pos["drops"]
        if dropped:
            device_drops["decode_error"] += dropped
            if images is None:
                continue
            if world > 1:  # every rank must gather the same batch size: repeat samples to fill it
                fill = torch.arange(t.batch_size, device=device) % len(images)
                images, texts = images[fill], texts[fill]
        lr = lr_at(step, t.lr, t.warmup_steps, t.steps)
        for g in optimizer.param_groups:
            g["lr"] = lr
        with autocast:
            image_features, text_features, logit_scale = model(images, texts)
            loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        with torch.no_grad():
            raw_model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        step += 1
        n_since += 1
        pending.append(loss.detach())

        last = step == end
        if step % t.log_every == 0 or last or step % t.checkpoint_every == 0:
            step_losses = torch.stack(pending).float().cpu().tolist()
            losses.extend(step_losses)
            pending = []
        if (step % t.log_every == 0 or last) and master:
            now = time.perf_counter()
            row = {
                "step": step, "loss": losses[-1], "loss_avg": sum(losses[-n_since:]) / n_since, "lr": lr,
                "logit_scale": float(raw_model.logit_scale.detach().exp()),
                "samples_per_s": n_since * t.batch_size * world / (now - t_log),
                "data_wait": data_wait / (now - t_log), "samples_seen": step * t.batch_size * world,
                "drops": _sum_drops(drops_by_stream, device_drops),
            }
            info(f"train: step {step}/{t.steps} loss {row['loss_avg']:.4f} {row['samples_per_s']:.1f} samples/s "
                 f"data-wait {row['data_wait']:.0%} lr {lr:.2e} logit-scale {row['logit_scale']:.1f}")
            fs, p = storage.fs_for(metrics_path)
            fs.makedirs(p.rsplit("/", 1)[0], exist_ok=True)
            with fs.open(p, "a") as f:
                f.write(json.dumps(row) + "\n")
            t_log, data_wait, n_since = now, 0.0, 0
        if step % t.checkpoint_every == 0 or last:
            all_pos = [{str(k): v for k, v in stream_pos.items()}]
            if world > 1:
                all_pos = [None] * world
                dist.all_gather_object(all_pos, {str(k): v for k, v in stream_pos.items()})
            if master:
                _save(ckpt_path, {
                    "name": t.model, "epoch": step, "step": step, "state_dict": raw_model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": {"kind": "cosine", "lr": t.lr, "warmup_steps": t.warmup_steps, "steps": t.steps},
                    "data": {"positions": all_pos, "num_workers": t.num_workers, "world_size": world, "urls": len(urls)},
                    "loss_curve": losses, "config": t.model_dump(mode="json"),
                })

    train_s = time.perf_counter() - t_start
    batches.close()  # stop the loader workers (and the GPU feed thread) before evaluating
    summary: dict[str, Any] = {
        "model": t.model, "steps": step, "target_steps": t.steps, "batch_size": t.batch_size * world,
        "samples_seen": step * t.batch_size * world, "checkpoint": ckpt_path,
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "samples_per_s": (step * t.batch_size * world - samples_at_start) / max(train_s, 1e-9),
        "drops": _sum_drops(drops_by_stream, device_drops), "data": data,
    }
    if step < t.steps:
        info(f"train: stopped at step {step}/{t.steps}; resume with `wit train --resume`")
        return summary
    if master:
        raw_model.eval()
        folders = labelled_folders(t.eval_dir, cfg)
        summary["eval"] = evaluate(raw_model, preprocess_val, tokenizer, folders, t.eval_pairs, device, t.templates)
        storage.write_json(join_path(out, "summary.json"), summary)
        stats = StageStats("train", input_rows=summary["samples_seen"])
        for reason, n in summary["drops"].items():
            stats.drop(reason, n)
        stats.extra = {k: summary[k] for k in ("model", "steps", "loss_first", "loss_last", "samples_per_s")}
        stats.write(out)
        storage.mark_complete(out)
    if world > 1:
        dist.barrier()
    return summary


def _sum_drops(by_stream: dict[int, dict], device_drops: Counter) -> dict[str, int]:
    total: Counter = Counter(device_drops)
    for d in by_stream.values():
        total.update(d)
    return dict(total)


# ----------------------------------------------------------------------------------------- CLI


def register(sub, common) -> None:
    p = sub.add_parser(
        "train", parents=[common], help="train a CLIP model (open_clip) on the final shards",
        description="Contrastive training of an open_clip model on webdataset shards (default output_dir/final; "
        "any img2dataset output works), then zero-shot and retrieval evaluation. Writes output_dir/train/: "
        "checkpoints/epoch_latest.pt, metrics.jsonl, summary.json. Multi-GPU: torchrun --nproc_per_node N jobs/train.py.",
    )
    flag(p, "--data", key="train.data", help="shards: folder, .tar, glob or brace pattern (config train.data)", metavar="SHARDS")
    flag(p, "--model", key="train.model", help="open_clip architecture, e.g. wit-tiny, ViT-B-32 (config train.model)", metavar="ARCH")
    flag(p, "--pretrained", key="train.pretrained", help="start from an open_clip tag or checkpoint path", metavar="TAG_OR_PATH")
    flag(p, "--steps", key="train.steps", type=int, metavar="N")
    flag(p, "--batch-size", key="train.batch_size", type=int, metavar="N")
    flag(p, "--lr", key="train.lr", type=float, metavar="LR")
    flag(p, "--workers", key="train.num_workers", type=int, metavar="N")
    flag(p, "--device", key="train.device", metavar="DEV")
    flag(p, "--gpu-preprocess", key="train.gpu_preprocess", choices=["auto", "none", "decode"],
         help="decode: JPEGs decoded and cropped on the GPU (auto on a GPU); none: in the loader workers")
    flag(p, "--eval-dir", key="train.eval_dir", metavar="DIR")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run in output_dir/train (error if none)")
    p.add_argument("--overwrite", action="store_true", help="discard an existing run and train from scratch")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace, cfg: RunConfig) -> int:
    summary = run_train(cfg, resume=True if args.resume else None, overwrite=args.overwrite)
    print(json.dumps({k: v for k, v in summary.items() if k != "drops"}, indent=2, default=str))
    return 0
