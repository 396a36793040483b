"""Feeding the GPU: JPEGs travel from the loader workers as bytes, the device decodes them (nvjpeg,
on the GPU's hardware JPEG engine where it has one) and a side thread prepares each batch on its
own CUDA stream while the model runs on the main one. Shared by `wit score` and `wit train`.

Why: on a 16-core GPU machine, PIL decoding + resizing in 14 worker processes feeds ViT-B-32 at
~3,600 pairs/s (scoring) and ~3,000 samples/s (training), while the model alone runs at ~13,000
and ~4,200; nvjpeg alone decodes ~28,000-34,000 256-px JPEGs/s (H200). Workers then only read tars
and tokenise (~24,000 samples/s).
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch


def is_complete_jpeg(data: bytes) -> bool:
    """JPEG with its end-of-image marker: safe to hand to the GPU decoder (which would silently
    accept a truncated file that PIL, and so the exact CPU path, rejects)."""
    return data[:2] == b"\xff\xd8" and data.rstrip(b"\x00")[-2:] == b"\xff\xd9"


def jpeg_for_device(data: bytes):
    """The header of a JPEG the device may decode as it is, as an unloaded PIL image (its size is
    what a crop box needs); None for what the CPU workers must decode and judge themselves: not a
    complete JPEG, an unreadable header, CMYK/YCCK, or past PIL's decompression-bomb limit (so one
    huge image cannot exhaust GPU memory). The one rule for scoring and training."""
    from PIL import Image

    if not is_complete_jpeg(data):
        return None
    try:
        im = Image.open(io.BytesIO(data))  # reads the header only; raises on a decompression bomb
    except Exception:  # noqa: BLE001 - the CPU path decides what is wrong with it
        return None
    return im if im.format == "JPEG" and im.mode in ("RGB", "L") else None


def pack_blobs(blobs: list[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """Byte strings → (one uint8 tensor, offsets): one shared-memory buffer between processes."""
    offsets = torch.tensor(np.cumsum([0] + [len(b) for b in blobs]), dtype=torch.int64)
    return torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8), offsets


def unpack_blobs(packed: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
    raw, offsets = packed
    bounds = offsets.tolist()
    return [raw[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]


def decode_jpegs(blobs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """uint8 RGB [3, H, W] images on ``device``; None where the decoder refuses one (the caller
    decides: a PIL retry or a counted drop). One batched call; image by image only on failure."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not blobs:
        return []
    try:
        return list(decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        out: list[torch.Tensor | None] = []
        for b in blobs:
            try:
                out.append(decode_jpeg(b, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
        return out


def pil_decode(blob: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """The fallback for what nvjpeg refuses (CMYK, odd markers): PIL, as the CPU path would."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob.numpy().tobytes())) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception:  # noqa: BLE001 - an image no decoder reads is one dropped sample
        return None
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(device)


FEED_MODES = ("ahead", "ahead_high_priority", "inline")


def prefetch(batches: Iterable, prepare: Callable, device: torch.device, depth: int = 3, mode: str = "ahead") -> Iterator[tuple]:
    """Yield ``(batch, prepare(batch))`` for each batch.

    On a GPU (mode "ahead") a background thread pulls the batches and runs ``prepare`` (copies,
    decoding, resizing) on a side CUDA stream, ``depth`` batches ahead, so that this work overlaps
    the model running on the main stream; tensors in the prepared result are handed over to the
    main stream. "ahead_high_priority" gives the side stream CUDA's high priority, so its small
    kernels are not queued behind the model's; "inline" prepares each batch in this thread, between
    model batches. Off a GPU ``prepare`` always runs inline.
    """
    if mode not in FEED_MODES:
        raise ValueError(f"feed mode {mode!r}: one of {FEED_MODES}")
    if device.type != "cuda" or mode == "inline":
        for b in batches:
            yield b, prepare(b)
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    stream = torch.cuda.Stream(device, priority=-1 if mode == "ahead_high_priority" else 0)
    source = iter(batches)  # DataLoader workers start from this thread

    def work():
        try:
            with torch.cuda.device(device), torch.cuda.stream(stream):
                for b in source:
                    out = prepare(b)
                    stream.synchronize()  # ready before the main stream touches it
                    while not stop.is_set():
                        try:
                            q.put((b, out), timeout=0.5)
                            break
                        except queue.Full:
                            pass
                    if stop.is_set():
                        return
            q.put(None)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consuming thread
            q.put(e)

    t = threading.Thread(target=work, name="gpu-feed", daemon=True)
    t.start()
    main = torch.cuda.current_stream(device)
    try:
        while (item := q.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            b, out = item
            for x in out if isinstance(out, tuple) else (out,):
                if isinstance(x, torch.Tensor) and x.is_cuda:
                    x.record_stream(main)  # memory made on the side stream, used on main
            yield b, out
    finally:
        stop.set()
        t.join(timeout=30)
