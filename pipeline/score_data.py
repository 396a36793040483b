"""The scoring input pipeline: DataLoader workers turn shard tars into ready uint8 batches.

Separate from pipeline/score.py only because it needs torch at import (the CLI must not).
"""

from __future__ import annotations

import io
import json

import numpy as np
import torch
from torch.utils.data import IterableDataset

from pipeline import storage
from pipeline.shards import IMAGE_EXTS, iter_tar


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


def decode(data: bytes, pil_part):
    """Decode + PIL transforms → uint8 CHW array; raises on any bad image."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        out = pil_part(im)
    if hasattr(out, "convert"):
        arr = np.asarray(out.convert("RGB"), dtype=np.uint8)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))
    return out  # a full preprocess already gave a float tensor


def is_complete_jpeg(data: bytes) -> bool:
    """JPEG with its end-of-image marker: safe to hand to the GPU decoder (which would silently
    accept a truncated file that PIL, and so the exact CPU path, rejects)."""
    return data[:2] == b"\xff\xd8" and data.rstrip(b"\x00")[-2:] == b"\xff\xd9"


class ShardBatches(IterableDataset):
    """Iterable of ready batches from a list of shards; run inside DataLoader workers.

    Each batch: ``images`` (uint8 [n,3,H,W] decoded + PIL-transformed here, or float when the
    transform can't be split), ``jpeg_data``/``jpeg_offsets`` (the raw bytes of the batch's other
    m images, concatenated, for GPU decoding when ``gpu_decode``), ``tokens`` [n+m, L], ``rows``
    [(shard, key, uid)] (the n images first), ``errors`` [(shard, key, uid, reason)] and ``done``
    (shards this worker finished: all its samples of them are in this or an earlier batch).
    """

    def __init__(self, shards: list[tuple[int, str]], pil_part, tokenizer, batch_size: int, gpu_decode: bool = False):
        self.shards, self.pil_part, self.tokenizer = shards, pil_part, tokenizer
        self.batch_size, self.gpu_decode = batch_size, gpu_decode

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        imgs, texts, rows, errors, done = [], [], [], [], []
        raw, raw_texts, raw_rows = [], [], []

        def batch():
            images = None
            if imgs:
                images = torch.from_numpy(np.stack(imgs)) if isinstance(imgs[0], np.ndarray) else torch.stack(imgs)
            data = offsets = None
            if raw:
                offsets = torch.tensor(np.cumsum([0] + [len(r) for r in raw]), dtype=torch.int64)
                data = torch.frombuffer(bytearray(b"".join(raw)), dtype=torch.uint8)
            all_texts = texts + raw_texts
            out = {
                "images": images, "jpeg_data": data, "jpeg_offsets": offsets,
                "tokens": self.tokenizer(all_texts) if all_texts else None,
                "rows": rows + raw_rows, "errors": list(errors), "done": list(done),
            }
            for x in (imgs, texts, rows, errors, done, raw, raw_texts, raw_rows):
                x.clear()
            return out

        for shard, path in self.shards:
            fs, p = storage.fs_for(path)
            with fs.open(p, "rb") as f:
                for _, key, sample in iter_tar(f, keep=lambda i: i % nw == wid):
                    meta = {}
                    if "json" in sample:
                        try:
                            meta = json.loads(sample["json"])
                        except ValueError:
                            meta = {}
                    uid = meta.get("uid") or ""
                    ext = next((e for e in IMAGE_EXTS if e in sample), None)
                    text = sample["txt"].decode("utf-8", "replace") if "txt" in sample else meta.get("text")
                    if ext is None:
                        errors.append((shard, key, uid, "missing_image"))
                        continue
                    if text is None:
                        errors.append((shard, key, uid, "missing_text"))
                        continue
                    if self.gpu_decode and is_complete_jpeg(sample[ext]):
                        raw.append(sample[ext])
                        raw_texts.append(text)
                        raw_rows.append((shard, key, uid))
                    else:
                        try:
                            imgs.append(decode(sample[ext], self.pil_part))
                        except Exception:  # noqa: BLE001 - any bad image is one dropped sample
                            errors.append((shard, key, uid, "decode_error"))
                            continue
                        texts.append(text)
                        rows.append((shard, key, uid))
                    if len(imgs) + len(raw) >= self.batch_size:
                        yield batch()
            done.append(shard)
        yield batch()
