"""The scoring input pipeline: DataLoader workers turn shard tars into ready uint8 batches.

Separate from pipeline/score.py only because it needs torch at import (the CLI must not).
"""

from __future__ import annotations

import io

import numpy as np
import torch
from torch.utils.data import IterableDataset

from pipeline import storage
from pipeline.gpu_feed import decode_jpegs, jpeg_for_device, pack_blobs
from pipeline.shards import IMAGE_EXTS, iter_tar, sample_json


def split_preprocess(preprocess):
    """Split open_clip's eval Compose at ToTensor: (PIL part, tensor part or None).

    The PIL part (resize, crop, RGB) runs in workers; ToTensor is ``uint8 / 255`` and the rest
    (Normalize) runs batched on the device, which is the same arithmetic, done where it is cheap.
    Returns (preprocess, None) when the transform has another shape (then workers run all of it).
    """
    from torchvision.transforms import Compose, ToTensor

    steps = list(getattr(preprocess, "transforms", []))
    cut = next((i for i, t in enumerate(steps) if isinstance(t, ToTensor)), None)
    if cut is None:
        return preprocess, None
    return Compose(steps[:cut]), Compose(steps[cut + 1:])


def decode(data: bytes, pil_part=None):
    """Decode (+ the PIL transforms, when given) → uint8 CHW array; raises on any bad image.

    Without ``pil_part`` the image is only decoded to RGB at full size (resized later on the GPU).
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        out = pil_part(im) if pil_part is not None else im.convert("RGB")
    if hasattr(out, "convert"):
        arr = np.asarray(out.convert("RGB"), dtype=np.uint8)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))
    return out  # a full preprocess already gave a float tensor


def decode_full(data: bytes) -> np.ndarray:
    """uint8 RGB CHW array at full size (resized later on the device); raises on any bad image.

    JPEGs the device rule admits (gpu_feed.jpeg_for_device) go through gpu_feed.decode_jpegs on the
    CPU: torchvision's libjpeg-turbo, the same library as PIL's and the same pixels (a test checks)
    at ~1.6× PIL's speed (decoding is most of a worker's time on this path), with PIL retrying what
    it refuses. Other formats go to PIL.
    """
    if jpeg_for_device(data) is None:
        return decode(data)
    image = decode_jpegs([torch.frombuffer(bytearray(data), dtype=torch.uint8)], torch.device("cpu"))[0]
    if image is None:
        raise ValueError("no decoder reads this JPEG")
    return image.numpy()


def parts_per_shard(n_shards: int, n_workers: int) -> int:
    """Split each shard into this many interleaved parts so that all workers get about the same
    work (≥ 2 parts per worker) while each worker reads as few tars as possible."""
    return max(1, -(-2 * n_workers // max(n_shards, 1))) if n_workers > 1 else 1


class ShardBatches(IterableDataset):
    """Iterable of ready batches from a list of shards; run inside DataLoader workers.

    ``where`` says how much of the image work happens here: "none" = decode + the PIL part of the
    transform (resize, crop: exact open_clip), "resize" = decode only (resize/crop on the GPU),
    "decode" = nothing for the JPEGs the device path may take (gpu_feed.jpeg_for_device: the main
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

    def __iter__(self):
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
                                name, item = "ready", decode(sample[ext], self.pil_part)
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
