"""`wit score`: the CLIP score of every downloaded pair, with any open_clip model (GPU or CPU).

Reads the download shards (``shards/NNNNN.tar`` with ``key.jpg|png|webp``, ``key.txt``,
``key.json``), preprocesses each image with the model's *own* open_clip eval transform and each
caption with its tokenizer, and writes per shard ``scores/NNNNN.parquet`` (schemas.SCORES):
``clip_score`` = cosine of the L2-normalised embeddings (no x100), ``score_error`` for images
that cannot be decoded, and optionally the fp16 embeddings. One output file per shard, written
under a temporary name and renamed, so a rerun skips finished shards.

Speed (the GPU should be the limit): DataLoader worker processes read the tars, tokenise and
build whole batches. On a GPU the JPEGs travel as bytes: CPU threads of the main process decode
what they can and nvjpeg the rest (gpu_feed.HybridJpegDecoder), the resize/crop and Normalize run
batched on the device, then both encoders under bf16 autocast. On a CPU the workers run the exact
PIL transform. Results of batch i are copied back while batch i+1 runs. Workers split every shard
by sample index, so a few big shards still use all workers.

Modes: ``local`` (this process) or ``spark`` (one task per shard; the model is loaded once per
Python worker through a module-level cache; on a GPU cluster set
``spark.executor.resource.gpu.amount=1``, ``spark.task.resource.gpu.amount=1`` and
``spark.executor.resource.gpu.discoveryScript`` — each task then uses the GPU Spark assigned it).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from pipeline import log, storage
from pipeline.cli import flag
from pipeline.config import RunConfig, ScoreConfig
from pipeline.errors import UserError
from pipeline.shards import list_shards, shard_name
from pipeline.stats import StageStats, read_stats

# --- the model ------------------------------------------------------------------------------------


class Scorer:
    """A loaded open_clip model + its preprocessing, scoring batches on one device."""

    def __init__(
        self, model: str, pretrained: str | None, device: str = "auto", precision: str = "auto", gpu_preprocess: str = "auto",
        decode_threads: int | None = None,
    ):
        import torch

        from pipeline.models import load_clip, resolve_device
        from pipeline.score_data import split_preprocess

        self.device = resolve_device(device)
        if pretrained is None:  # random init (tests): the same weights in every process / Spark worker
            torch.manual_seed(0)
        self.model, self.preprocess, self.tokenizer = load_clip(model, pretrained, self.device)
        self.pil_part, self.tensor_part = split_preprocess(self.preprocess)
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.precision = precision
        self.gpu_preprocess, self.decode_threads = "none", None
        self.feed = "ahead"  # how batches are prepared on a GPU (gpu_feed.FEED_MODES); the benchmark compares them
        self.decoder = None  # a HybridJpegDecoder while score_shards runs with gpu_preprocess="decode"
        self.set_gpu_preprocess(gpu_preprocess, decode_threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def set_gpu_preprocess(self, where: str, decode_threads: int | None = None) -> None:
        """How much image work moves to the device: none (exact PIL), resize, or decode.

        Resizing on the device (torch's antialiased bicubic instead of PIL's) changes scores by
        ~1e-4, below bf16's own error, so "auto" = decode on a GPU (the fastest path: loader workers
        then only read tars and tokenise) and none (exact PIL) on a CPU. With "decode", JPEGs are
        decoded by ``decode_threads`` CPU threads of this process (None = gpu_feed.default_decode_threads,
        0 = none) and by the device's decoder (nvjpeg), whichever gets to them first.
        """
        self.decode_threads = decode_threads
        if where == "auto":
            where = "decode" if self.device.type == "cuda" else "none"
        if self.tensor_part is None:  # a transform we can't split: workers run all of it
            where = "none"
        self.gpu_preprocess = where

    def _device_images(self, kind: str, data, n: int) -> tuple[object, list[int]]:
        """One batch group → (uint8/float images on the device at model size, indices that failed)."""
        import torch

        if kind == "ready":
            return data.to(self.device, non_blocking=True), []
        if kind == "raw":  # same-size decoded images: the transform's Resize/CenterCrop, batched
            return self.pil_part(data.to(self.device, non_blocking=True)), []
        dec = self.decoder.finish(data)  # data: what begin() started
        groups: dict[tuple, list[int]] = {}
        for i, d in enumerate(dec):
            if d is not None:
                groups.setdefault(tuple(d.shape), []).append(i)
        bad = [i for i, d in enumerate(dec) if d is None]
        if not groups:
            return None, bad
        # Resize/crop each image size batched; then back to row order (usually one size: no reorder)
        resized = [self.pil_part(torch.stack([dec[i] for i in idx])) for idx in groups.values()]
        images = resized[0] if len(resized) == 1 else torch.cat(resized)
        order = [i for idx in groups.values() for i in idx]
        if any(a > b for a, b in zip(order, order[1:], strict=False)):
            images = images[torch.argsort(torch.tensor(order)).to(images.device)]
        return images, bad

    def begin(self, b: dict) -> None:
        """Start decoding a batch's JPEGs on the CPU threads (prepare, a few batches later, finishes it)."""
        from pipeline.gpu_feed import unpack_blobs

        b["groups"] = [(kind, self.decoder.begin(unpack_blobs(data)) if kind == "jpeg" else data, n)
                       for kind, data, n in b["groups"]]

    def prepare(self, b: dict):
        """One ShardBatches batch → (rows, images on the device, tokens on the device, [(row, reason)])."""
        import torch

        rows, parts, keep, errors, start = b["rows"], [], [], [], 0
        for kind, data, n in b["groups"]:
            images, bad = self._device_images(kind, data, n)
            if images is not None:
                parts.append(images)
            bad_set = set(bad)
            keep += [start + i for i in range(n) if i not in bad_set]
            errors += [(rows[start + i], "decode_error") for i in bad]
            start += n
        if not parts:
            return [], None, None, errors
        images = parts[0] if len(parts) == 1 else torch.cat(parts)
        tokens = b["tokens"] if len(keep) == len(rows) else b["tokens"][keep]
        return [rows[i] for i in keep], images, tokens.to(self.device, non_blocking=True), errors

    def prepared(self, loader):
        """Yield (batch, prepare(batch)); on a GPU prepared ahead on a side stream (gpu_feed.prefetch)."""
        from pipeline.gpu_feed import prefetch

        begin = self.begin if self.gpu_preprocess == "decode" else None
        return prefetch(loader, self.prepare, self.device, mode=self.feed, begin=begin)

    def embed(self, images, tokens):
        """Normalised (image, text) embeddings (float32) of a batch already on the host or device."""
        import torch

        images = images.to(self.device, non_blocking=True)
        tokens = tokens.to(self.device, non_blocking=True)
        if images.dtype == torch.uint8:
            images = images.float().div_(255)
        if self.tensor_part is not None:
            images = self.tensor_part(images)
        amp = self.precision == "bf16"
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            img = self.model.encode_image(images)
            txt = self.model.encode_text(tokens)
        img = torch.nn.functional.normalize(img.float(), dim=-1)
        txt = torch.nn.functional.normalize(txt.float(), dim=-1)
        return img, txt


_SCORERS: dict[tuple, Scorer] = {}


def get_scorer(sc: ScoreConfig, device: str | None = None) -> Scorer:
    """One Scorer per (model, weights, device) per process: Spark tasks reuse the worker's model."""
    key = (sc.model, sc.pretrained, device or sc.device, sc.precision)
    if key not in _SCORERS:
        _SCORERS[key] = Scorer(sc.model, sc.pretrained, device or sc.device, sc.precision)
    _SCORERS[key].set_gpu_preprocess(sc.gpu_preprocess, sc.decode_threads)
    return _SCORERS[key]


# --- scoring shards -------------------------------------------------------------------------------


def score_shards(
    scorer: Scorer, shards: list[tuple[int, str]], out_dir: str, batch_size: int = 256,
    num_workers: int = 2, save_embeddings: bool = False,
) -> dict[str, int]:
    """Score the given shards into ``out_dir/NNNNN.parquet`` (each written atomically); counts."""
    import torch

    if not shards:
        return {"scored": 0, "errors": 0, "shards": 0}
    from pipeline.gpu_feed import HybridJpegDecoder, default_decode_threads
    from pipeline.score_data import ShardBatches, parts_per_shard

    ds = ShardBatches(shards, scorer.pil_part, scorer.tokenizer, batch_size, scorer.gpu_preprocess)
    on_gpu = scorer.device.type == "cuda"
    nw = num_workers
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=nw, pin_memory=on_gpu,
        prefetch_factor=4 if nw else None, persistent_workers=False,
    )
    parts = parts_per_shard(len(shards), nw)
    results: dict[int, list[tuple]] = {s: [] for s, _ in shards}
    done_count: dict[int, int] = {s: 0 for s, _ in shards}
    counts = {"scored": 0, "errors": 0, "shards": 0}
    progress = log.Progress("score", unit="pairs", every_s=10.0)

    def launch(images, tokens):
        """Encode a batch and start copying its results to the host; settle() waits for them."""
        img, txt = scorer.embed(images, tokens)
        outs = [(img * txt).sum(-1)] + ([img.half(), txt.half()] if save_embeddings else [])
        if not on_gpu:
            return outs, None
        outs = [x.to("cpu", non_blocking=True) for x in outs]  # into pinned memory, asynchronously
        event = torch.cuda.Event()
        event.record()
        return outs, event

    def settle(item):
        """Store one launched batch's results, then finish the shard parts that ended with it."""
        rows, launched, done = item
        if launched is not None:
            outs, event = launched
            if event is not None:
                event.synchronize()  # this batch only: the next one is already queued on the GPU
            scores = outs[0].float().numpy()
            ie, te = (outs[1].numpy(), outs[2].numpy()) if save_embeddings else (None, None)
            for i, (shard, key, uid) in enumerate(rows):
                emb = (ie[i].astype("<f2").tobytes(), te[i].astype("<f2").tobytes()) if save_embeddings else (None, None)
                results[shard].append((uid, key, shard, float(scores[i]), None, *emb))
            counts["scored"] += len(rows)
            progress.update(len(rows))
        for s in done:
            done_count[s] += 1
            if done_count[s] == parts:
                finish(s)

    def finish(shard):
        rows = sorted(results.pop(shard), key=lambda r: r[1])
        cols = list(zip(*rows, strict=True)) if rows else [[] for _ in range(7)]
        arrays = [pa.array(list(c), f.type) for f, c in zip(schemas.SCORES, cols, strict=True)]
        table = pa.Table.from_arrays(arrays, schema=schemas.SCORES)
        schemas.validate(table, schemas.SCORES)
        path = f"{out_dir.rstrip('/')}/{shard_name(shard)}.parquet"
        with storage.atomic_path(path) as tmp:
            fs, p = storage.fs_for(tmp)
            with fs.open(p, "wb") as f:
                pq.write_table(table, f)
        counts["shards"] += 1

    inflight: deque = deque()  # (rows, launch(), done shard parts), oldest first
    if scorer.gpu_preprocess == "decode":
        threads = scorer.decode_threads if scorer.decode_threads is not None else default_decode_threads(nw)
        scorer.decoder = HybridJpegDecoder(scorer.device, threads)
    try:
        for b, (rows, images, tokens, bad) in scorer.prepared(loader):
            for shard, key, uid, reason in b["errors"] + [(*r, reason) for r, reason in bad]:
                results[shard].append((uid, key, shard, None, reason, None, None))
                counts["errors"] += 1
            inflight.append((rows, launch(images, tokens) if rows else None, b["done"]))
            while len(inflight) > 1:  # keep one batch running on the device while this one is stored
                settle(inflight.popleft())
        while inflight:
            settle(inflight.popleft())
    finally:
        if scorer.decoder is not None:
            scorer.decoder.close()
            counts["jpegs_decoded_by"] = dict(scorer.decoder.decoded)
            scorer.decoder = None
    for s in list(results):  # workers that had no sample of a shard still mark it done; safety net
        finish(s)
    progress.done()
    return counts


def _spark_task(sc_json: str, out_dir: str, items: Iterator[tuple[int, str]]) -> Iterator[dict]:
    """Spark: score the shards of one partition with this worker's cached model."""
    from pyspark import TaskContext

    sc = ScoreConfig.model_validate_json(sc_json)
    device = None
    ctx = TaskContext.get()
    gpus = ctx.resources().get("gpu") if ctx is not None else None
    if gpus is not None and gpus.addresses:
        device = f"cuda:{gpus.addresses[0]}"  # the GPU Spark assigned this task
    scorer = get_scorer(sc, device)
    yield score_shards(scorer, list(items), out_dir, sc.batch_size, sc.num_workers, sc.save_embeddings)


def run_score(
    cfg: RunConfig, spark=None, shards_dir: str | None = None, out_dir: str | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Score every shard of ``shards_dir`` (default cfg.path("shards")) into ``out_dir``; returns stats."""
    sc = cfg.score
    shards_dir = shards_dir or cfg.path("shards")
    out_dir = out_dir or cfg.path("scores")
    if overwrite:
        storage.remove(out_dir)
    elif storage.is_complete(out_dir):
        log.info(f"score: {out_dir} is complete; skipping (use --overwrite to redo)")
        return read_stats(out_dir) or {}
    shards = list_shards(shards_dir)
    if not shards:
        raise UserError(f"no NNNNN.tar shards in {shards_dir}")
    fs, p = storage.fs_for(out_dir)
    fs.makedirs(p, exist_ok=True)
    storage.clean_temporaries(out_dir)
    todo = [(s, t) for s, t in shards if not fs.exists(f"{p}/{shard_name(s)}.parquet")]
    stats = StageStats("score")
    log.info(f"score: {len(shards)} shards, {len(shards) - len(todo)} already done; model {sc.model} ({sc.pretrained or 'random init'})")
    t0 = time.perf_counter()
    if sc.mode == "spark" and todo:
        if spark is None:
            from pipeline.spark import get_spark

            spark = get_spark(cfg.spark)
        rdd = spark.sparkContext.parallelize(todo, len(todo))
        sc_json = sc.model_dump_json()
        parts = rdd.mapPartitions(lambda it: _spark_task(sc_json, out_dir, it)).collect()
    elif todo:
        scorer = get_scorer(sc)
        parts = [score_shards(scorer, todo, out_dir, sc.batch_size, sc.num_workers, sc.save_embeddings)]
    else:
        parts = []
    elapsed = time.perf_counter() - t0
    # Stats over all shards (also the ones an earlier run finished).
    table = pq.read_table(
        [f"{p}/{shard_name(s)}.parquet" for s, _ in shards], filesystem=fs, columns=["clip_score", "score_error"]
    )
    errors = table.column("score_error").drop_null().to_pylist()
    for e in errors:
        stats.drop(e)
    scored = table.num_rows - len(errors)
    stats.input_rows, stats.output_rows = table.num_rows, scored
    new = sum(x["scored"] for x in parts)
    decoded_by: dict[str, int] = {}
    for x in parts:
        for side, k in x.get("jpegs_decoded_by", {}).items():
            decoded_by[side] = decoded_by.get(side, 0) + k
    stats.extra = {
        "model": sc.model, "pretrained": sc.pretrained, "shards": len(shards), "shards_scored_now": len(todo),
        "pairs_per_s_this_run": round(new / elapsed, 1) if new and elapsed > 0 else None,
        "jpegs_decoded_by_this_run": decoded_by or None,  # gpu_preprocess=decode: CPU threads vs the device
        "mean_clip_score": float(np.nanmean(table.column("clip_score").to_numpy(zero_copy_only=False).astype(float))) if scored else None,
    }
    d = stats.write(out_dir)
    storage.mark_complete(out_dir)
    return d


# --- CLI ------------------------------------------------------------------------------------------


def register(sub, common) -> None:
    p = sub.add_parser(
        "score", parents=[common], help="CLIP-score every downloaded pair (GPU or CPU)",
        description="Read shards/NNNNN.tar, score each image-text pair with an open_clip model "
        "(cosine of normalised embeddings) and write scores/NNNNN.parquet + _stats.json + _SUCCESS. "
        "Resumable per shard.",
    )
    flag(p, "--model", key="score.model", help="open_clip model name, e.g. ViT-B-32, wit-tiny, hf-hub:org/repo")
    flag(p, "--pretrained", key="score.pretrained", help="open_clip pretrained tag or checkpoint path (none = random init)")
    flag(p, "--batch-size", key="score.batch_size", type=int)
    flag(p, "--device", key="score.device", help="auto | cpu | cuda | cuda:N")
    flag(p, "--num-workers", key="score.num_workers", type=int,
         help="loader worker processes: read tars, tokenise, and decode images except decode's JPEGs")
    flag(p, "--mode", key="score.mode", choices=["local", "spark"])
    flag(p, "--gpu-preprocess", key="score.gpu_preprocess", choices=["auto", "none", "resize", "decode"],
         help="image work off the loader workers: none (exact PIL), resize (on the GPU), decode (CPU threads + nvjpeg); auto = decode on GPU")
    flag(p, "--decode-threads", key="score.decode_threads", type=int, metavar="N",
         help="with decode: CPU threads decoding JPEGs beside nvjpeg (0 = nvjpeg only; default: the CPUs the workers leave)")
    flag(p, "--save-embeddings", key="score.save_embeddings", action="store_const", const=True, help="also store fp16 embeddings")
    p.add_argument("--input", help="shards folder (default <output_dir>/shards)")
    p.add_argument("--output", help="scores folder (default <output_dir>/scores)")
    p.add_argument("--overwrite", action="store_true", help="redo a complete output")
    p.set_defaults(func=_cli)


def _cli(args, cfg: RunConfig) -> int:
    from pipeline.stats import summary_line

    d = run_score(cfg, shards_dir=args.input, out_dir=args.output, overwrite=args.overwrite)
    print(summary_line(d))
    return 0


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
