"""Shards → batches for the model: the input pipeline that `wit train` and `wit score` share.

Both run in DataLoader worker processes that read webdataset tars, decode images, run the PIL
part of the model's own open_clip transform and tokenise captions; the rest of the transform
(ToTensor's /255 and Normalize) runs batched on the device. On a GPU, complete JPEGs skip the
workers' decoding: they travel as bytes and the device decodes them (`pipeline.gpu_feed`).

- decoding and the transform split: `pipeline.image_decode`;
- training: `TrainStream`, an endless, seeded, resumable stream; `device_batch` finishes its
  batches on the device;
- scoring: `ScoreBatches`, every sample of every shard once, shards split across the workers.

Separate from train.py and score.py because it imports torch, which their CLI parts must not.
"""

from __future__ import annotations

import glob
import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import IterableDataset

from pipeline import storage
from pipeline.errors import UserError
from pipeline.ids import hash_to_unit
from pipeline.image_decode import (
    DeviceNormalize,
    decode_full,
    decode_image,
    decode_jpegs,
    jpeg_for_device,
    pack_blobs,
    unpack_blobs,
)
from pipeline.shards import IMAGE_EXTS, iter_tar, sample_json

# -------------------------------------------------------------------------------------- training


def shard_urls(path: str) -> list[str]:
    """Webdataset shard list from a folder (its *.tar), one .tar, a glob or a brace pattern."""
    import braceexpand

    if os.path.isdir(path):
        urls = sorted(glob.glob(os.path.join(path, "*.tar")))
    elif any(ch in path for ch in "*?["):
        urls = sorted(glob.glob(path))
    else:
        urls = list(braceexpand.braceexpand(path))
        if "://" not in path:
            urls = [u for u in urls if os.path.isfile(u)]
    if not urls:
        raise UserError(f"no webdataset shards (*.tar) at {path}")
    return urls


class _BadSample(Exception):
    """A sample that cannot be trained on; the message is the drop reason."""


def _seed_int(*parts: object) -> int:
    return int(hash_to_unit(*parts) * 2**62)


@contextmanager
def _seeded(seed: int):
    """torch's CPU generator seeded by a sample's position, restored after: a resumed run draws the
    same crop for each sample as an uninterrupted run (in any worker, at any time)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


class TrainStream(IterableDataset):
    """One rank's endless, reproducible stream of ``(images, tokens, position)`` batches.

    Resampled shards → samples → shuffle buffer → skip what a resumed run already consumed →
    optional online balancing (keep with the sample's ``keep_prob``) → decode + ``preprocess`` →
    batches. Bad samples are skipped and counted by reason in the batch's position record
    ``{"stream", "raw", "drops", "kept"}``.

    Every DataLoader worker reads its own seeded stream and reports how many raw samples it read
    (``raw``), so a resumed run (``start_step``, ``positions`` = {stream: raw} of this rank) skips
    exactly those, before decoding, and sees the batches an uninterrupted run would have seen.

    With ``device_crop`` (the transform's RandomResizedCrop, `device_crop_of`), the JPEGs the device
    may decode are not decoded here: they travel as bytes with the crop box drawn here, and
    `device_batch` decodes and crops them. ``images`` = {"ready": uint8 [n, 3, H, W] (or float from
    a transform that cannot be split), "jpegs": packed bytes, "boxes": [m, 4]}; tokens are in that
    order (ready, then jpegs).
    """

    def __init__(self, urls: list[str], preprocess, tokenizer, batch_size: int, seed: int = 0,
                 shuffle_buffer: int = 1000, online_balancing: bool = False, rank: int = 0, start_step: int = 0,
                 positions: dict[str, int] | None = None, device_crop=None):
        self.urls, self.preprocess, self.tokenizer, self.batch_size = urls, preprocess, tokenizer, batch_size
        self.seed, self.shuffle_buffer, self.online_balancing = seed, shuffle_buffer, online_balancing
        self.rank, self.start_step, self.positions, self.crop = rank, start_step, positions or {}, device_crop

    def __iter__(self):
        import webdataset as wds
        from webdataset.filters import _shuffle

        wi = torch.utils.data.get_worker_info()
        worker, n_workers = (wi.id, wi.num_workers) if wi else (0, 1)
        # DataLoader hands out batches round-robin from worker 0; after resuming at step s, worker 0
        # must continue the stream that an uninterrupted run would have used for step s.
        stream = (worker + self.start_step) % n_workers
        skip = int(self.positions.get(str(stream), 0))
        stream_seed = _seed_int(self.seed, self.rank, stream, n_workers)
        drops: Counter = Counter()
        raw = kept = 0

        def count_error(exn: Exception) -> bool:
            drops["read_error"] += 1
            return True

        def shards():  # resampled forever: stop if they hold no samples at all instead of spinning
            resampled = wds.ResampledShards(self.urls, seed=stream_seed, worker_seed=lambda: 0, deterministic=True)
            for n, shard in enumerate(resampled):
                if n >= 10 * len(self.urls) + 100 and raw == 0:
                    raise UserError(f"the shards at {self.urls[0]} … hold no samples ({dict(drops)})")
                yield shard

        samples = wds.tarfile_to_samples(handler=count_error)(shards())
        if self.shuffle_buffer > 1:
            samples = _shuffle(samples, self.shuffle_buffer, self.shuffle_buffer, rng=random.Random(stream_seed))
        images, texts, jpegs, boxes, jpeg_texts = [], [], [], [], []
        for sample in samples:
            raw += 1
            if raw <= skip:
                continue
            if kept == 0 and raw - skip >= 5000:
                raise UserError(f"no usable image/text sample among the first 5000 read from {self.urls[0]} …: {dict(drops)}")
            if self.online_balancing and hash_to_unit(stream_seed, raw) >= _keep_prob(sample):
                drops["balancing"] += 1
                continue
            aug_seed = _seed_int(stream_seed, raw)
            try:
                key, text = _image_and_text(sample)
                job = self._for_device(sample[key], aug_seed) if self.crop is not None else None
                if job is None:
                    images.append(self._decode(sample[key], aug_seed))
                    texts.append(text)
                else:
                    jpegs.append(job[0])
                    boxes.append(job[1])
                    jpeg_texts.append(text)
            except _BadSample as e:
                drops[str(e)] += 1
                continue
            kept += 1
            if len(images) + len(jpegs) == self.batch_size:
                position = {"stream": stream, "raw": raw, "drops": dict(drops), "kept": kept}
                batch = {"ready": torch.stack(images) if images else None, "jpegs": pack_blobs(jpegs) if jpegs else None,
                         "boxes": torch.tensor(boxes, dtype=torch.int64) if boxes else None}
                yield batch, self.tokenizer(texts + jpeg_texts), position
                images, texts, jpegs, boxes, jpeg_texts = [], [], [], [], []

    def _decode(self, data: bytes, aug_seed: int) -> torch.Tensor:
        try:
            with _seeded(aug_seed):
                out = decode_image(data, self.preprocess, rgb_first=True)
        except Exception:  # noqa: BLE001 - any undecodable image is one counted drop
            raise _BadSample("decode_error") from None
        return torch.from_numpy(out) if isinstance(out, np.ndarray) else out

    def _for_device(self, data: bytes, aug_seed: int) -> tuple[bytes, tuple[int, int, int, int]] | None:
        """(JPEG bytes, crop box (top, left, height, width)) for the device to decode and crop, the
        box drawn from the same seed as the CPU path draws it; None where this worker must decode
        the image itself (`jpeg_for_device` says which)."""
        size = jpeg_for_device(data)
        if size is None:
            return None
        shape_only = torch.empty(()).expand(3, size[1], size[0])  # get_params reads only the image's shape
        with _seeded(aug_seed):
            return data, self.crop.get_params(shape_only, self.crop.scale, self.crop.ratio)


def _keep_prob(sample: dict) -> float:
    try:
        return float(json.loads(sample["json"]).get("keep_prob", 1.0))
    except Exception:  # noqa: BLE001 - no or bad metadata: keep the sample
        return 1.0


def _image_and_text(sample: dict) -> tuple[str, str]:
    """The sample's image key and caption, or the reason it cannot be trained on."""
    key = next((k for k in IMAGE_EXTS if k in sample), None)
    if key is None:
        raise _BadSample("missing_image")
    text = sample.get("txt", b"").decode("utf-8", "replace").strip()
    if not text:
        raise _BadSample("missing_text")
    return key, text


def device_crop_of(pil_part):
    """The RandomResizedCrop the device can run for the workers: open_clip's plain training
    transform is exactly [RandomResizedCrop, MaybeConvertMode]; None for anything else (other
    augmentations stay on the CPU path)."""
    from torchvision import transforms as T

    ts = list(getattr(pil_part, "transforms", []))
    if len(ts) == 2 and isinstance(ts[0], T.RandomResizedCrop) and type(ts[1]).__name__ == "MaybeConvertMode":
        return ts[0]
    return None


def device_batch(batch, device: torch.device, normalize: DeviceNormalize | None = None, crop=None):
    """A TrainStream batch → (model-ready float images on the device, tokens on the device, images dropped).

    Ready images (uint8 from the workers) get ``normalize``; JPEGs are decoded on the device
    (nvjpeg on a GPU) and cropped + resized there with their worker-drawn boxes (torchvision's
    tensor resized_crop, same interpolation and antialiasing), then normalised. An image no
    decoder reads is dropped with its caption.
    """
    from torchvision.transforms import functional as TF

    images, tokens, _ = batch
    parts, keep = [], []
    ready = images["ready"]
    if ready is not None:
        parts.append(ready.to(device, non_blocking=True))
        keep += range(len(ready))
    if images["jpegs"] is not None:
        blobs, offset = unpack_blobs(images["jpegs"]), len(keep)
        crops = []
        for i, ((top, left, h, w), d) in enumerate(zip(images["boxes"].tolist(), decode_jpegs(blobs, device), strict=True)):
            if d is None:
                continue
            crops.append(TF.resized_crop(d.float(), top, left, h, w, list(crop.size), crop.interpolation, antialias=True))
            keep.append(offset + i)
        if crops:
            parts.append(torch.stack(crops).clamp_(0, 255))  # as the uint8 CPU path clamps
    if not parts:
        return None, None, len(tokens)
    x = parts[0] if len(parts) == 1 else torch.cat([p.float() for p in parts])
    if normalize is not None:
        x = normalize(x)
    dropped = len(tokens) - len(keep)
    tokens = tokens[keep] if dropped else tokens
    return x, tokens.to(device, non_blocking=True), dropped


def make_loader(dataset: IterableDataset, num_workers: int, pin_memory: bool):
    import webdataset as wds

    return wds.WebLoader(
        dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
        prefetch_factor=4 if num_workers else None, persistent_workers=False,
    )


# --------------------------------------------------------------------------------------- scoring


def parts_per_shard(n_shards: int, n_workers: int) -> int:
    """Split each shard into this many interleaved parts so that all workers get about the same
    work (≥ 2 parts per worker) while each worker reads as few tars as possible."""
    return max(1, -(-2 * n_workers // max(n_shards, 1))) if n_workers > 1 else 1


class ScoreBatches(IterableDataset):
    """Ready batches of every sample of a list of shards, once; run inside DataLoader workers.

    ``where`` says how much of the image work happens here: "none" = decode + the PIL part of the
    transform (resize, crop: exact open_clip), "resize" = decode only (resize/crop on the GPU),
    "decode" = nothing for the JPEGs the device path may take (`jpeg_for_device`: the main
    process's HybridJpegDecoder decodes them); other formats and odd JPEGs are decoded here.
    Each batch: ``groups`` [(kind, data, n)] with kind "ready" (uint8 [n,3,S,S] or float),
    "raw" (uint8 [n,3,H,W], one size per group) or "jpeg" ((bytes, offsets)); ``tokens``;
    ``rows`` [(shard, key, uid)] in group order; ``errors`` [(shard, key, uid, reason)]; ``done``
    (one entry per finished part of a shard: that part's samples are in this or an earlier
    batch; a shard is complete after ``parts_per_shard`` entries).
    """

    def __init__(self, shards: list[tuple[int, str]], pil_part, tokenizer, batch_size: int, gpu_preprocess: str = "none"):
        self.shards, self.pil_part, self.tokenizer = shards, pil_part, tokenizer
        self.batch_size, self.where = batch_size, gpu_preprocess

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        # group name -> (items, texts, rows); "ready", "jpeg", or a (h, w) size of raw images
        pending: dict = {}
        errors, done = [], []
        count = 0

        def batch():
            groups, texts, rows = [], [], []
            for name, (items, gtexts, grows) in pending.items():
                if name == "jpeg":
                    data = pack_blobs(items)
                elif isinstance(items[0], np.ndarray):
                    data = torch.from_numpy(np.stack(items))
                else:
                    data = torch.stack(items)
                groups.append(("jpeg" if name == "jpeg" else "ready" if name == "ready" else "raw", data, len(items)))
                texts += gtexts
                rows += grows
            out = {"groups": groups, "tokens": self.tokenizer(texts) if texts else None, "rows": rows,
                   "errors": list(errors), "done": list(done)}
            pending.clear(), errors.clear(), done.clear()
            return out

        parts = parts_per_shard(len(self.shards), nw)
        units = [(s, path, part) for s, path in self.shards for part in range(parts)]
        for shard, path, part in units[wid::nw]:
            fs, p = storage.fs_for(path)
            with fs.open(p, "rb") as f:
                for _, key, sample in iter_tar(f, keep=lambda i, part=part: i % parts == part):
                    meta = sample_json(sample)
                    uid = meta.get("uid") or ""
                    ext = next((e for e in IMAGE_EXTS if e in sample), None)
                    text = sample["txt"].decode("utf-8", "replace") if "txt" in sample else meta.get("text")
                    if ext is None:
                        errors.append((shard, key, uid, "missing_image"))
                        continue
                    if text is None:
                        errors.append((shard, key, uid, "missing_text"))
                        continue
                    if self.where == "decode" and jpeg_for_device(sample[ext]) is not None:
                        name, item = "jpeg", sample[ext]
                    else:
                        try:
                            if self.where == "none":
                                name, item = "ready", decode_image(sample[ext], self.pil_part)
                            else:
                                item = decode_full(sample[ext])
                                name = item.shape[1:]
                        except Exception:  # noqa: BLE001 - any bad image is one dropped sample
                            errors.append((shard, key, uid, "decode_error"))
                            continue
                    items, texts, rows = pending.setdefault(name, ([], [], []))
                    items.append(item)
                    texts.append(text)
                    rows.append((shard, key, uid))
                    count += 1
                    if count >= self.batch_size:
                        count = 0
                        yield batch()
            done.append(shard)
        yield batch()
