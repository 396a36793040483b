"""`wit score`: the CLIP score of every downloaded pair, with any open_clip model (GPU or CPU).

Reads the download shards (``shards/NNNNN.tar`` with ``key.jpg|png|webp``, ``key.txt``,
``key.json``), preprocesses each image with the model's *own* open_clip eval transform and each
caption with its tokenizer, and writes per shard ``scores/NNNNN.parquet`` (schemas.SCORES):
``clip_score`` = cosine of the L2-normalised embeddings (no x100), ``unsafe_score`` (below),
``score_error`` for images that cannot be decoded, and optionally the fp16 embeddings. One output
file per shard, written under a temporary name and renamed, so a rerun skips finished shards.

Safety tagging (``score.safety``, on by default), as LAION tagged its sets: zero-shot
classification of the image embedding the scoring pass already computed against
``score.safety_prompts`` (unsafe + safe prompts, encoded once per loaded model): softmax over
100 x cosine (CLIP's zero-shot logit scale), ``unsafe_score`` = the probability mass on the unsafe
prompts. A matrix product per batch; no second model, no second pass over the images. What it can
and cannot catch: README, Score.

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
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import schemas
from pipeline import inputs, log, progress, storage
from pipeline.config import ScoreConfig
from pipeline.errors import UserError
from pipeline.shards import list_shards, name_of
from pipeline.stage import Flag, StageContext, stage

# The tokenizers library (some open_clip models' tokenizer) warns, and can deadlock, when the
# DataLoader forks its workers after it has used threads: tokenise without them.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# --- the model ------------------------------------------------------------------------------------


class Scorer:
    """A loaded open_clip model + its preprocessing, scoring batches on one device."""

    def __init__(
        self, model: str, pretrained: str | None, device: str = "auto", precision: str = "auto", gpu_preprocess: str = "auto",
        decode_threads: int | None = None,
    ):
        import torch

        from pipeline.image_decode import split_preprocess
        from pipeline.models import load_clip, resolve_device

        self.device = resolve_device(device)
        if pretrained is None:  # random init (tests): the same weights in every process / Spark worker
            torch.manual_seed(0)
        self.model, self.preprocess, self.tokenizer = load_clip(model, pretrained, self.device)
        # The workers (or the device) run pil_part; normalize (ToTensor + Normalize) runs on the device.
        # None: a transform that cannot be split, which the workers run whole.
        self.pil_part, self.normalize = split_preprocess(self.preprocess) or (self.preprocess, None)
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.precision = precision
        self.gpu_preprocess, self.decode_threads = "none", None
        self.feed = "ahead"  # how batches are prepared on a GPU (gpu_feed.FEED_MODES); the benchmark compares them
        self.decoder = None  # its HybridJpegDecoder, inside ``decoding()`` with gpu_preprocess="decode"
        self._prompt_embeddings: dict[tuple[str, ...], object] = {}  # prompts → normalised text embeddings
        self.set_gpu_preprocess(gpu_preprocess, decode_threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def set_gpu_preprocess(self, where: str, decode_threads: int | None = None) -> None:
        """How much image work moves to the device: none (exact PIL), resize, or decode.

        Resizing on the device (torch's antialiased bicubic instead of PIL's) changes scores by less
        than bf16's own error (README, Score), so "auto" = decode on a GPU (the fastest path: loader
        workers then only read tars and tokenise) and none (exact PIL) on a CPU. With "decode", JPEGs are
        decoded by ``decode_threads`` CPU threads of this process (None = gpu_feed.default_decode_threads,
        0 = none) and by the device's decoder (nvjpeg), whichever gets to them first.
        """
        self.decode_threads = decode_threads
        if where == "auto":
            where = "decode" if self.device.type == "cuda" else "none"
        if self.normalize is None:  # a transform we can't split: workers run all of it
            where = "none"
        self.gpu_preprocess = where

    @contextmanager
    def decoding(self, num_workers: int) -> Iterator[Counter]:
        """A scoring pass's JPEG decoder: with gpu_preprocess="decode", a HybridJpegDecoder (CPU threads:
        ``decode_threads``, else the CPUs ``num_workers`` loader workers leave) that ``begin``/``prepare``
        use until the pass ends. Yields a Counter that holds, after the pass, how many JPEGs each side
        decoded (empty without the decoder)."""
        decoded: Counter = Counter()
        if self.gpu_preprocess != "decode":
            yield decoded
            return
        from pipeline.gpu_feed import HybridJpegDecoder, default_decode_threads

        threads = self.decode_threads if self.decode_threads is not None else default_decode_threads(num_workers)
        self.decoder = HybridJpegDecoder(self.device, threads)
        try:
            yield decoded
        finally:
            self.decoder.close()
            decoded.update(self.decoder.decoded)
            self.decoder = None

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
        from pipeline.image_decode import unpack_blobs

        b["groups"] = [(kind, self.decoder.begin(unpack_blobs(data)) if kind == "jpeg" else data, n)
                       for kind, data, n in b["groups"]]

    def prepare(self, b: dict):
        """One ScoreBatches batch → (rows, images on the device, tokens on the device, [(row, reason)])."""
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
        if self.normalize is not None:
            images = self.normalize(images)
        amp = self.precision == "bf16"
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            img = self.model.encode_image(images)
            txt = self.model.encode_text(tokens)
        img = torch.nn.functional.normalize(img.float(), dim=-1)
        txt = torch.nn.functional.normalize(txt.float(), dim=-1)
        return img, txt

    def prompt_embeddings(self, prompts: tuple[str, ...]):
        """Normalised text embeddings (float32, on the device) of fixed prompts, encoded once per scorer."""
        import torch

        if prompts not in self._prompt_embeddings:
            tokens = self.tokenizer(list(prompts)).to(self.device)
            amp = self.precision == "bf16"
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                txt = self.model.encode_text(tokens)
            self._prompt_embeddings[prompts] = torch.nn.functional.normalize(txt.float(), dim=-1)
        return self._prompt_embeddings[prompts]


ZERO_SHOT_LOGIT_SCALE = 100.0  # CLIP's zero-shot scale (a trained model's logit_scale.exp(), clamped at 100)


def unsafe_probability(img, prompts, n_unsafe: int):
    """Per image: softmax over ZERO_SHOT_LOGIT_SCALE x cosine with each prompt embedding (rows of
    ``prompts``, the first ``n_unsafe`` unsafe), summed over the unsafe prompts."""
    probs = (ZERO_SHOT_LOGIT_SCALE * img @ prompts.T).softmax(dim=-1)
    return probs[:, :n_unsafe].sum(dim=-1)


def safety_prompts(sc: ScoreConfig) -> tuple[list[str], list[str]] | None:
    """(unsafe, safe) prompts when safety tagging is on, else None."""
    return (sc.safety_prompts.unsafe, sc.safety_prompts.safe) if sc.safety else None


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
    num_workers: int = 2, save_embeddings: bool = False, safety: tuple[list[str], list[str]] | None = None,
) -> dict[str, int]:
    """Score the given shards into ``out_dir/NNNNN.parquet`` (each written atomically); counts.

    ``safety``: (unsafe prompts, safe prompts) to fill ``unsafe_score`` from the same forward pass;
    None leaves it null."""
    if not shards:
        return {"scored": 0, "errors": 0, "shards": 0}
    return ShardScoring(scorer, shards, out_dir, save_embeddings, safety).run(batch_size, num_workers)


class ShardScoring:
    """One scoring pass over some shards: batches in, one Parquet per shard out. Results of batch i
    are copied back to the host while batch i+1 runs; a shard is written once all its parts (the
    loader workers' slices of it) are scored."""

    def __init__(self, scorer: Scorer, shards: list[tuple[int, str]], out_dir: str, save_embeddings: bool,
                 safety: tuple[list[str], list[str]] | None):
        self.scorer, self.shards, self.out_dir = scorer, shards, out_dir.rstrip("/")
        self.save_embeddings, self.on_gpu = save_embeddings, scorer.device.type == "cuda"
        self.results: dict[int, list[tuple]] = {s: [] for s, _ in shards}
        self.names = {s: name_of(t) for s, t in shards}  # each output named as its tar is
        self.done_parts: dict[int, int] = {s: 0 for s, _ in shards}
        self.counts = {"scored": 0, "errors": 0, "shards": 0}
        self.n_unsafe = len(safety[0]) if safety else 0
        self.prompts = scorer.prompt_embeddings((*safety[0], *safety[1])) if safety else None
        self.progress = progress.Progress("score", None, unit="pairs", every_s=10.0)

    def run(self, batch_size: int, num_workers: int) -> dict:
        import torch

        from pipeline.shard_data import ScoreBatches, parts_per_shard

        sc = self.scorer
        ds = ScoreBatches(self.shards, sc.pil_part, sc.tokenizer, batch_size, sc.gpu_preprocess)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=None, num_workers=num_workers, pin_memory=self.on_gpu,
            prefetch_factor=4 if num_workers else None, persistent_workers=False,
        )
        self.parts = parts_per_shard(len(self.shards), num_workers)
        inflight: deque = deque()  # (rows, launch(), done shard parts), oldest first
        with sc.decoding(num_workers) as decoded:
            for b, (rows, images, tokens, bad) in sc.prepared(loader):
                for shard, key, uid, reason in b["errors"] + [(*r, reason) for r, reason in bad]:
                    self.results[shard].append((uid, key, shard, None, None, reason, None, None))
                    self.counts["errors"] += 1
                inflight.append((rows, self.launch(images, tokens) if rows else None, b["done"]))
                while len(inflight) > 1:  # keep one batch running on the device while this one is stored
                    self.settle(inflight.popleft())
            while inflight:
                self.settle(inflight.popleft())
        if decoded:
            self.counts["jpegs_decoded_by"] = dict(decoded)
        for s in list(self.results):  # workers that had no sample of a shard still mark it done; safety net
            self.finish(s)
        self.progress.close()
        return self.counts

    def launch(self, images, tokens):
        """Encode a batch and start copying its results to the host; settle() waits for them."""
        import torch

        img, txt = self.scorer.embed(images, tokens)
        outs = {"clip": (img * txt).sum(-1)}
        if self.prompts is not None:
            outs["unsafe"] = unsafe_probability(img, self.prompts, self.n_unsafe)
        if self.save_embeddings:
            outs["image"], outs["text"] = img.half(), txt.half()
        if not self.on_gpu:
            return outs, None
        outs = {k: x.to("cpu", non_blocking=True) for k, x in outs.items()}  # into pinned memory, asynchronously
        event = torch.cuda.Event()
        event.record()
        return outs, event

    def settle(self, item) -> None:
        """Store one launched batch's results, then finish the shard parts that ended with it."""
        rows, launched, done = item
        if launched is not None:
            outs, event = launched
            if event is not None:
                event.synchronize()  # this batch only: the next one is already queued on the GPU
            scores = outs["clip"].float().numpy()
            unsafe = outs["unsafe"].float().numpy() if "unsafe" in outs else None
            ie, te = (outs["image"].numpy(), outs["text"].numpy()) if self.save_embeddings else (None, None)
            for i, (shard, key, uid) in enumerate(rows):
                emb = (ie[i].astype("<f2").tobytes(), te[i].astype("<f2").tobytes()) if self.save_embeddings else (None, None)
                u = float(unsafe[i]) if unsafe is not None else None
                self.results[shard].append((uid, key, shard, float(scores[i]), u, None, *emb))
            self.counts["scored"] += len(rows)
            self.progress.add(len(rows))
        for s in done:
            self.done_parts[s] += 1
            if self.done_parts[s] == self.parts:
                self.finish(s)

    def finish(self, shard: int) -> None:
        """Write one shard's scores (schemas.SCORES, sorted by key) atomically."""
        rows = sorted(self.results.pop(shard), key=lambda r: r[1])
        cols = list(zip(*rows, strict=True)) if rows else [[] for _ in schemas.SCORES]
        arrays = [pa.array(list(c), f.type) for f, c in zip(schemas.SCORES, cols, strict=True)]
        table = pa.Table.from_arrays(arrays, schema=schemas.SCORES)
        schemas.validate(table, schemas.SCORES)
        with storage.atomic_path(f"{self.out_dir}/{self.names[shard]}.parquet") as tmp:
            fs, p = storage.fs_for(tmp)
            with fs.open(p, "wb") as f:
                pq.write_table(table, f)
        self.counts["shards"] += 1


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
    yield score_shards(scorer, list(items), out_dir, sc.batch_size, sc.num_workers, sc.save_embeddings, safety_prompts(sc))


@stage("score", order=80, input="shards", output="scores", writes="parts", spark=False,
       job_defaults=("--set", "score.mode=spark"), help="CLIP-score every downloaded pair (GPU or CPU)",
       description="Read shards/NNNNN.tar, score each image-text pair with an open_clip model "
       "(cosine of normalised embeddings) and write scores/NNNNN.parquet + _stats.json + _SUCCESS. "
       "Resumable per shard.",
       input_help="download shards folder (default: <output_dir>/shards)",
       output_help="scores folder (default: <output_dir>/scores)",
       options=[Flag("--model", key="score.model", help="open_clip model name, e.g. ViT-B-32, wit-tiny, hf-hub:org/repo"),
                Flag("--pretrained", key="score.pretrained",
                     help="open_clip pretrained tag or checkpoint path (none = random init)"),
                Flag("--batch-size", key="score.batch_size", type=int),
                Flag("--device", key="score.device", help="auto | cpu | cuda | cuda:N"),
                Flag("--num-workers", key="score.num_workers", type=int,
                     help="loader worker processes: read tars, tokenise, and decode images except decode's JPEGs"),
                Flag("--mode", key="score.mode", choices=["local", "spark"]),
                Flag("--gpu-preprocess", key="score.gpu_preprocess", choices=["auto", "none", "resize", "decode"],
                     help="image work off the loader workers: none (exact PIL), resize (on the GPU), decode (CPU "
                     "threads + nvjpeg); auto = decode on GPU"),
                Flag("--decode-threads", key="score.decode_threads", type=int, metavar="N",
                     help="with decode: CPU threads decoding JPEGs beside nvjpeg (0 = nvjpeg only; default: the CPUs "
                     "the workers leave)"),
                Flag("--save-embeddings", key="score.save_embeddings", action="store_const", const=True,
                     help="also store fp16 embeddings"),
                Flag("--no-safety", key="score.safety", action="store_const", const=False,
                     help="leave unsafe_score null (no zero-shot safety tagging against score.safety_prompts)")])
def run_score(ctx: StageContext) -> None:
    """Score every shard of ``input`` (download shards; default <output_dir>/shards) into ``output``
    (default <output_dir>/scores): one Parquet per shard, each written atomically, so a rerun scores
    only the shards not done yet. The stats cover every shard, also those an earlier run scored."""
    sc = ctx.cfg.score
    shards = list_shards(ctx.input)
    if not shards:
        raise UserError(f"no NNNNN.tar shards in {ctx.input}")
    damaged = inputs.shard_problems(shards, metadata=None)  # scored as far as readable; named in the stats
    for d in damaged:
        log.warn(f"score: damaged shard {d['path']}: {d['detail']} (its unreadable samples count as score_error in select)")
    out_dir = ctx.tmp
    fs, p = storage.fs_for(out_dir)
    fs.makedirs(p, exist_ok=True)
    storage.clean_temporaries(out_dir)
    todo = [(s, t) for s, t in shards if not fs.exists(f"{p}/{name_of(t)}.parquet")]
    log.info(f"score: {len(shards)} shards, {len(shards) - len(todo)} already done; model {sc.model} ({sc.pretrained or 'random init'})")
    t0 = time.perf_counter()
    if sc.mode == "spark" and todo:
        rdd = ctx.spark.sparkContext.parallelize(todo, len(todo))
        sc_json = sc.model_dump_json()
        parts = rdd.mapPartitions(lambda it: _spark_task(sc_json, out_dir, it)).collect()
    elif todo:
        scorer = get_scorer(sc)
        parts = [score_shards(scorer, todo, out_dir, sc.batch_size, sc.num_workers, sc.save_embeddings, safety_prompts(sc))]
    else:
        parts = []
    elapsed = time.perf_counter() - t0
    table = pq.read_table(  # by the schema: shards scored before the unsafe_score column read it as null
        [f"{p}/{name_of(t)}.parquet" for _, t in shards], filesystem=fs, schema=schemas.SCORES,
        columns=["clip_score", "unsafe_score", "score_error"],
    )
    stats = ctx.stats
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
        "safety": sc.safety,
        "mean_unsafe_score": pc.mean(table.column("unsafe_score")).as_py(),  # None when no pair has one
        "damaged_shards": damaged,
    }
