"""`wit train`: contrastive pre-training of an open_clip model on webdataset shards, in one loop.

The CLIP recipe, nanoGPT-style: read image/caption pairs from shards (ours or any img2dataset
output), embed both with an open_clip model, and minimise the symmetric cross-entropy of the
image↔text similarity matrix scaled by a learnable temperature. Multi-GPU runs start under
torchrun; features are gathered across ranks with open_clip's local-loss + gather-with-grad scheme.
The data stream (shards → batches on the device) is `pipeline.shard_data`.

Outputs under ``output_dir/train/`` (only rank 0 writes): ``checkpoints/epoch_latest.pt``
(periodic and final; loads with ``open_clip.create_model_and_transforms(name, pretrained=path)``),
``metrics.jsonl`` (one row per logged step), ``summary.json`` and ``_stats.json`` (the same
summary: final loss, speed, drops, zero-shot and retrieval numbers), ``_SUCCESS``.

Resuming continues the same run: model, optimiser, step (the lr follows from it), loss curve and
the data position, so a resumed run sees the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from pipeline import inputs, storage
from pipeline.checkpoint import checkpoint_path, load_checkpoint
from pipeline.config import join_path
from pipeline.errors import UserError
from pipeline.log import info, warn
from pipeline.stage import Flag, Option, StageContext, stage

MAX_LOGIT_SCALE = math.log(100)


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


# ------------------------------------------------------------------------------------ the run


def _show(summary: dict) -> str:
    return json.dumps({k: v for k, v in summary.items() if k != "drops"}, indent=2, default=str)


@stage("train", order=100, input=lambda cfg: cfg.train.data or cfg.path("final"), output="train", writes="parts",
       spark=False, show=_show, help="train a CLIP model (open_clip) on the final shards",
       description="Contrastive training of an open_clip model on webdataset shards (default output_dir/final; "
       "any img2dataset output works), then zero-shot and retrieval evaluation. Writes output_dir/train/: "
       "checkpoints/epoch_latest.pt, metrics.jsonl, summary.json. Multi-GPU: torchrun --nproc_per_node N jobs/train.py.",
       input_help="shards: folder, .tar, glob or brace pattern (default: config train.data, else <output_dir>/final)",
       output_help="output folder (default: <output_dir>/train)",
       options=[Flag("--model", key="train.model", metavar="ARCH",
                     help="open_clip architecture, e.g. wit-tiny, ViT-B-32 (config train.model)"),
                Flag("--pretrained", key="train.pretrained", metavar="TAG_OR_PATH",
                     help="start from an open_clip tag or checkpoint path"),
                Flag("--steps", key="train.steps", type=int, metavar="N"),
                Flag("--batch-size", key="train.batch_size", type=int, metavar="N"),
                Flag("--lr", key="train.lr", type=float, metavar="LR"),
                Flag("--workers", key="train.num_workers", type=int, metavar="N"),
                Flag("--device", key="train.device", metavar="DEV"),
                Flag("--gpu-preprocess", key="train.gpu_preprocess", choices=["auto", "none", "decode"],
                     help="decode: JPEGs decoded and cropped on the GPU (auto on a GPU); none: in the loader workers"),
                Flag("--eval-dir", key="train.eval_dir", metavar="DIR"),
                Option("--resume", action="store_const", const=True, default=None,
                       help="continue the unfinished run in the output folder, and fail if there is none "
                       "(without it, an unfinished run found there is continued too)")])
def run_train(ctx: StageContext, resume: bool | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Train ``train.model`` on the shards at ``input`` (a folder, .tar, glob or brace pattern;
    default ``train.data`` or <output_dir>/final) into ``output`` (default <output_dir>/train);
    returns the summary, which is also the stage's _stats.json.

    ``resume``: None continues an unfinished run found in the output, True requires one, False
    starts over. ``stop_after`` stops after that step as if interrupted: a resumable checkpoint, an
    output not marked complete. Runs in this process, or in each of torchrun's (``spark`` unused).
    """
    from pipeline.shard_data import shard_urls

    t = ctx.cfg.train
    ranks = _start_distributed()
    if resume is False and ranks.master:
        storage.remove(ctx.output)
    ranks.barrier()  # no rank looks for a checkpoint before rank 0 removed what is discarded
    urls = shard_urls(ctx.input)
    inputs.require_shards([(0, u) for u in urls if not u.startswith("pipe:")], "train input", metadata=None)
    files = _Files(ctx.output)
    m = _build(t, ranks)
    progress = _resume(m, files, t, ranks, resume)
    _wrap(m, t, ranks)
    batches = _batches(m, urls, t, ranks, progress)
    if ranks.master:
        info(f"train: {t.model} on {len(urls)} shard(s) at {ctx.input}, {ranks.world}×{m.device}, "
             f"batch {t.batch_size}×{ranks.world}, steps {progress.step}→{t.steps}, {'bf16' if m.bf16 else 'fp32'}")
    end = min(t.steps, stop_after) if stop_after else t.steps
    t_start, step_start = time.perf_counter(), progress.step
    try:
        _loop(m, batches, progress, files, t, ranks, end, len(urls))
    finally:
        batches.close()  # stop the loader workers (and the GPU feed thread) before evaluating
    samples_per_s = (progress.step - step_start) * t.batch_size * ranks.world / max(time.perf_counter() - t_start, 1e-9)
    summary = _summary(ctx, progress, files, samples_per_s, ranks)
    if progress.step < t.steps:
        ctx.complete = False
        info(f"train: stopped at step {progress.step}/{t.steps}; resume with `wit train --resume`")
        return summary
    if ranks.master:
        from pipeline.eval import evaluate, labelled_folders

        m.model.eval()
        folders = labelled_folders(t.eval_dir, ctx.cfg)
        summary["eval"] = evaluate(m.model, m.preprocess_val, m.tokenizer, folders, t.eval_pairs, m.device, t.templates)
        storage.write_json(files.summary, summary)
    ranks.barrier()
    return summary


# --- build -------------------------------------------------------------------------------------


@dataclass
class _Ranks:
    """This process's place in a torchrun launch: (0, 1, 0) without one."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def master(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def _start_distributed() -> _Ranks:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Ranks()
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return _Ranks(dist.get_rank(), world, local)


@dataclass
class _Model:
    """The model and everything that trains it or feeds it."""

    device: Any
    bf16: bool
    autocast: Any
    model: Any  # the model itself: what is saved, evaluated, and whose logit scale is clamped
    forward: Any  # what the loop calls: the model, wrapped for DDP and/or compiled
    optimizer: Any
    loss_fn: Any
    preprocess: Any  # what the loader workers run on each image (the PIL part, where split)
    normalize: Any  # the rest of the transform, on the device (image_decode.DeviceNormalize), or None
    crop: Any  # the RandomResizedCrop the device runs on JPEGs it decodes, or None
    preprocess_val: Any
    tokenizer: Any


def _build(t, ranks: _Ranks) -> _Model:
    import torch
    from open_clip.loss import ClipLoss
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from pipeline.image_decode import split_preprocess
    from pipeline.models import load_clip, resolve_device
    from pipeline.shard_data import device_crop_of

    if ranks.world > 1 and torch.cuda.is_available():
        device = torch.device("cuda", ranks.local)
    else:
        device = resolve_device(t.device)
    bf16 = t.precision == "bf16" or (t.precision == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(t.seed)
    model, preprocess_val, tokenizer = load_clip(t.model, t.pretrained, device, for_training=True)
    model.train()
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=True)
    split = split_preprocess(preprocess)
    normalize = crop = None
    if split:
        preprocess, normalize = split
        where = t.gpu_preprocess if t.gpu_preprocess != "auto" else "decode" if device.type == "cuda" else "none"
        crop = device_crop_of(preprocess) if where == "decode" else None
    optimizer = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps)
    return _Model(
        device=device, bf16=bf16, autocast=torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext(),
        model=model, forward=model, optimizer=optimizer,
        loss_fn=ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True, rank=ranks.rank, world_size=ranks.world),
        preprocess=preprocess, normalize=normalize, crop=crop, preprocess_val=preprocess_val, tokenizer=tokenizer,
    )


def _wrap(m: _Model, t, ranks: _Ranks) -> None:
    """DDP and torch.compile around the model, once its weights are loaded."""
    import torch

    if ranks.world > 1:
        ids = [ranks.local] if m.device.type == "cuda" else None
        m.forward = torch.nn.parallel.DistributedDataParallel(m.forward, device_ids=ids)
    if t.compile:
        m.forward = torch.compile(m.forward)


class _Files:
    """A run's files in its output folder, on any filesystem (fsspec)."""

    def __init__(self, output: str):
        self.checkpoint = checkpoint_path(output)
        self.metrics = MetricsLog(join_path(output, "metrics.jsonl"))
        self.summary = join_path(output, "summary.json")


class MetricsLog:
    """metrics.jsonl: one JSON row per logged step, appended as the run goes (local or object store)."""

    def __init__(self, path: str):
        self.path = path
        self.fs, self.p = storage.fs_for(path)

    def append(self, row: dict) -> None:
        self.fs.makedirs(self.p.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(self.p, "a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate(self, step: int) -> None:
        """Drop the rows logged after ``step``: a killed run may have logged past its last checkpoint."""
        self.fs.invalidate_cache(self.p)  # another process (the killed run) wrote it
        if not self.fs.exists(self.p):
            return
        with self.fs.open(self.p, "r") as f:
            rows = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        with storage.atomic_path(self.path) as tmp:
            fs, p = storage.fs_for(tmp)
            with fs.open(p, "w") as f:
                f.writelines(rows)


# --- resume ------------------------------------------------------------------------------------


@dataclass
class _Progress:
    """What a checkpoint carries from one process's run to the next, besides the weights."""

    step: int = 0
    losses: list[float] = field(default_factory=list)  # the loss of every step so far
    positions: dict[str, int] = field(default_factory=dict)  # this rank's data stream: raw samples read per worker stream
    # the data drops so far (by worker stream, as each stream counts them; the device's own)
    drops_by_stream: dict[int, dict] = field(default_factory=dict)
    device_drops: Counter = field(default_factory=Counter)

    def drops(self) -> dict[str, int]:
        total: Counter = Counter(self.device_drops)
        for d in self.drops_by_stream.values():
            total.update(d)
        return dict(total)


def _resume(m: _Model, files: _Files, t, ranks: _Ranks, resume: bool | None) -> _Progress:
    """Load the unfinished run's checkpoint into the model and optimiser (when there is one and
    ``resume`` is not False); the progress to continue from."""
    progress = _Progress()
    if storage.exists(files.checkpoint) and resume is not False:
        ck = load_checkpoint(files.checkpoint)
        m.model.load_state_dict(ck["state_dict"])
        m.optimizer.load_state_dict(ck["optimizer"])
        progress.step = ck["step"] if "step" in ck else ck["epoch"]  # older checkpoints: the step under "epoch"
        progress.losses = list(ck["loss_curve"])
        data = ck["data"]
        if data["num_workers"] == t.num_workers and data["world_size"] == ranks.world:
            progress.positions = data["positions"][ranks.rank]
        else:
            warn("train: num_workers or world size changed since the checkpoint; the data stream restarts")
        info(f"train: resuming {files.checkpoint} at step {progress.step}/{t.steps}")
        if ranks.master:
            files.metrics.truncate(progress.step)
    elif resume:
        raise UserError(f"nothing to resume: no checkpoint at {files.checkpoint}")
    return progress


def _batches(m: _Model, urls: list[str], t, ranks: _Ranks, progress: _Progress):
    """The (loader batch, batch on the device) pairs this rank trains on, from where it stopped."""
    from pipeline.gpu_feed import prefetch
    from pipeline.shard_data import TrainStream, device_batch, make_loader

    stream = TrainStream(urls, m.preprocess, m.tokenizer, t.batch_size, t.seed, t.shuffle_buffer, t.online_balancing,
                         ranks.rank, progress.step, dict(progress.positions), device_crop=m.crop)
    loader = make_loader(stream, t.num_workers, m.device.type == "cuda")
    return prefetch(loader, functools.partial(device_batch, device=m.device, normalize=m.normalize, crop=m.crop), m.device)


# --- the loop ----------------------------------------------------------------------------------


def _loop(m: _Model, batches, progress: _Progress, files: _Files, t, ranks: _Ranks, end: int, n_urls: int) -> None:
    import torch

    window = _Window()
    pending = []  # this window's losses, still on the device: read in one go when logged (no sync per step)
    while progress.step < end:
        t0 = time.perf_counter()
        (_, _, position), (images, texts, dropped) = next(batches)
        window.data_wait += time.perf_counter() - t0
        progress.positions[str(position["stream"])] = position["raw"]
        progress.drops_by_stream[position["stream"]] = position["drops"]
        if dropped:
            progress.device_drops["decode_error"] += dropped
            if images is None:
                continue
            if ranks.world > 1:  # every rank must gather the same batch size: repeat samples to fill it
                fill = torch.arange(t.batch_size, device=m.device) % len(images)
                images, texts = images[fill], texts[fill]
        lr = lr_at(progress.step, t.lr, t.warmup_steps, t.steps)
        pending.append(_step(m, images, texts, lr, t.grad_clip))
        progress.step += 1
        window.steps += 1
        last = progress.step == end
        log_now = progress.step % t.log_every == 0 or last
        checkpoint_now = progress.step % t.checkpoint_every == 0 or last
        if log_now or checkpoint_now:
            progress.losses.extend(torch.stack(pending).float().cpu().tolist())
            pending = []
        if log_now and ranks.master:
            files.metrics.append(_log_row(m, progress, window, lr, t, ranks))
            window = _Window()
        if checkpoint_now:
            _save_checkpoint(m, progress, files, t, ranks, n_urls)


def _step(m: _Model, images, texts, lr: float, grad_clip: float | None):
    """One optimiser step on a batch; the loss, still on the device."""
    import torch

    for g in m.optimizer.param_groups:
        g["lr"] = lr
    with m.autocast:
        image_features, text_features, logit_scale = m.forward(images, texts)
        loss = m.loss_fn(image_features, text_features, logit_scale)
    m.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(m.forward.parameters(), grad_clip)
    m.optimizer.step()
    with torch.no_grad():
        m.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    return loss.detach()


@dataclass
class _Window:
    """The steps since the last metrics row, and the time they spent waiting for data."""

    steps: int = 0
    data_wait: float = 0.0
    t0: float = field(default_factory=time.perf_counter)


def _log_row(m: _Model, progress: _Progress, window: _Window, lr: float, t, ranks: _Ranks) -> dict:
    elapsed = time.perf_counter() - window.t0
    row = {
        "step": progress.step, "loss": progress.losses[-1],
        "loss_avg": sum(progress.losses[-window.steps:]) / window.steps, "lr": lr,
        "logit_scale": float(m.model.logit_scale.detach().exp()),
        "samples_per_s": window.steps * t.batch_size * ranks.world / elapsed,
        "data_wait": window.data_wait / elapsed, "samples_seen": progress.step * t.batch_size * ranks.world,
        "drops": progress.drops(),
    }
    info(f"train: step {progress.step}/{t.steps} loss {row['loss_avg']:.4f} {row['samples_per_s']:.1f} samples/s "
         f"data-wait {row['data_wait']:.0%} lr {lr:.2e} logit-scale {row['logit_scale']:.1f}")
    return row


def _save_checkpoint(m: _Model, progress: _Progress, files: _Files, t, ranks: _Ranks, n_urls: int) -> None:
    """Rank 0 writes one checkpoint with every rank's data position (a collective: all ranks call it)."""
    positions = [dict(progress.positions)]
    if ranks.world > 1:
        import torch.distributed as dist

        positions = [None] * ranks.world
        dist.all_gather_object(positions, dict(progress.positions))
    if not ranks.master:
        return
    checkpoint = {
        "name": t.model, "step": progress.step,
        # open_clip's meaning (open_clip_train reads it as the epochs done): a run is one epoch of
        # train.steps steps over resampled shards, as open_clip_train's --dataset-resampled makes it
        "epoch": int(progress.step >= t.steps),
        "state_dict": m.model.state_dict(), "optimizer": m.optimizer.state_dict(),
        "scheduler": {"kind": "cosine", "lr": t.lr, "warmup_steps": t.warmup_steps, "steps": t.steps},
        "data": {"positions": positions, "num_workers": t.num_workers, "world_size": ranks.world, "urls": n_urls},
        "loss_curve": progress.losses, "config": t.model_dump(mode="json"),
    }
    with storage.atomic_path(files.checkpoint) as tmp:
        import torch

        fs, p = storage.fs_for(tmp)
        with fs.open(p, "wb") as f:
            torch.save(checkpoint, f)


# --- finish ------------------------------------------------------------------------------------


def _summary(ctx: StageContext, progress: _Progress, files: _Files, samples_per_s: float, ranks: _Ranks) -> dict:
    """The run's stats (as every stage's _stats.json has them) and its training figures, in one dict."""
    t = ctx.cfg.train
    samples_seen = progress.step * t.batch_size * ranks.world
    ctx.stats.input_rows = samples_seen
    for reason, n in progress.drops().items():
        ctx.stats.drop(reason, n)
    losses = progress.losses
    return {
        **ctx.stats.as_dict(), "model": t.model, "steps": progress.step, "target_steps": t.steps,
        "batch_size": t.batch_size * ranks.world, "samples_seen": samples_seen, "checkpoint": files.checkpoint,
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "samples_per_s": samples_per_s, "data": ctx.input,
    }
