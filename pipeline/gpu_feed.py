"""Feeding the GPU: the loader workers send JPEGs as bytes, the device decodes them (nvjpeg, on the
GPU's hardware JPEG engine where it has one) and a side thread prepares each batch on its own CUDA
stream while the model runs on the main one. Shared by `wit score` and `wit train`.

Why: PIL decoding + resizing in the loader workers cannot keep up with a ViT-B-32 on a GPU
machine's CPUs, while workers that only read tars and tokenise can (figures: README "Benchmarks",
bench/results/*_gpu.json). But nvjpeg shares the GPU with the model and slows several-fold while
the model runs, so scoring decodes with CPU threads as well (`HybridJpegDecoder`): they take what
they can, the device decodes the rest.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from pipeline.image_decode import decode_jpegs


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def default_decode_threads(loader_workers: int) -> int:
    """CPU threads for HybridJpegDecoder: the CPUs this process may use, less one per loader worker
    and one for this process's own work (launching the model); at least one."""
    return max(1, usable_cpus() - loader_workers - 1)


class HybridJpegDecoder:
    """Decodes batches of JPEGs with CPU threads first and the device's decoder for what is left.

    ``begin`` queues a batch for the threads in small chunks; ``finish`` takes back the chunks that
    no thread has started, decodes them on the device in one batched call, waits for the chunks in
    progress and returns every image, in order, on the device. Called a few batches after ``begin``
    (prefetch's ``lookahead``), the threads are never idle and the device decodes only what they
    could not: the split follows whichever side is faster on this machine, with nothing to tune.
    With no threads the device decodes everything. torchvision's CPU decoder is libjpeg-turbo, as
    PIL's is (the same pixels) and runs without the GIL; what it refuses goes to PIL.
    """

    def __init__(self, device: torch.device, threads: int, chunk: int = 16):
        self.device, self.chunk = device, chunk
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="jpeg-cpu") if threads > 0 else None
        self.decoded = {"cpu_threads": 0, "device": 0}  # images each side decoded (a figure for stats)

    def begin(self, blobs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[Future]]:
        pin = self.device.type == "cuda"
        chunks = [] if self.pool is None else [
            self.pool.submit(_decode_on_cpu, blobs[i:i + self.chunk], pin) for i in range(0, len(blobs), self.chunk)]
        return blobs, chunks

    def finish(self, started: tuple[list[torch.Tensor], list[Future]]) -> list[torch.Tensor | None]:
        """uint8 RGB [3, H, W] images on the device, one per blob; None for one no decoder reads."""
        blobs, chunks = started
        out: list[torch.Tensor | None] = [None] * len(blobs)
        if not chunks:
            left = list(range(len(blobs)))
        else:
            # cancel() only succeeds for chunks no thread has picked up: those go to the device
            left = [i for c, f in enumerate(chunks) if f.cancel()
                    for i in range(c * self.chunk, min((c + 1) * self.chunk, len(blobs)))]
        for i, d in zip(left, decode_jpegs([blobs[i] for i in left], self.device), strict=True):
            out[i] = d
        for c, f in enumerate(chunks):
            if f.cancelled():
                continue
            for positions, images in f.result():  # one copy per chunk and image size
                images = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # NHWC → NCHW view
                for j, img in zip(positions, images, strict=True):
                    out[c * self.chunk + j] = img
        self.decoded["device"] += len(left)
        self.decoded["cpu_threads"] += len(blobs) - len(left)
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _decode_on_cpu(blobs: list[torch.Tensor], pin: bool) -> list[tuple[list[int], torch.Tensor]]:
    """(positions in the chunk, their images stacked channels-last, as the decoder wrote them) per
    image size, in pinned memory for a GPU (copied to it asynchronously); an image no decoder reads
    is left out. Stacked by numpy, a plain copy: a torch copy this size would start an OpenMP team of
    every core in each of these threads, and a channels-first copy (a transpose) costs a sizeable
    share of the decoding itself; the device permutes for free."""
    images = decode_jpegs(blobs, torch.device("cpu"))
    by_shape: dict[tuple, list[int]] = {}
    for j, img in enumerate(images):
        if img is not None:
            by_shape.setdefault(tuple(img.shape), []).append(j)
    out = []
    for shape, positions in by_shape.items():
        channels, height, width = shape
        stacked = torch.empty((len(positions), height, width, channels), dtype=torch.uint8, pin_memory=pin)
        np.stack([images[j].permute(1, 2, 0).numpy() for j in positions], out=stacked.numpy())
        out.append((positions, stacked))
    return out


FEED_MODES = ("ahead", "ahead_high_priority", "inline")


def begun(batches: Iterable, begin: Callable, lookahead: int) -> Iterator:
    """Yield each batch ``lookahead`` batches after calling ``begin`` on it, so that the work begin
    starts (CPU decoding) runs while the earlier batches are prepared and used."""
    started: deque = deque()
    for b in batches:
        begin(b)
        started.append(b)
        if len(started) > lookahead:
            yield started.popleft()
    yield from started


def prefetch(batches: Iterable, prepare: Callable, device: torch.device, depth: int = 3, mode: str = "ahead",
             begin: Callable | None = None, lookahead: int = 2) -> Iterator[tuple]:
    """Yield ``(batch, prepare(batch))`` for each batch (with ``begin(batch)`` called ``lookahead``
    batches earlier, when given: see ``begun``).

    On a GPU (mode "ahead") a background thread pulls the batches and runs ``prepare`` (copies,
    decoding, resizing) on a side CUDA stream, ``depth`` batches ahead, so that this work overlaps
    the model running on the main stream; tensors in the prepared result are handed over to the
    main stream. "ahead_high_priority" gives the side stream CUDA's high priority, so its small
    kernels are not queued behind the model's; "inline" prepares each batch in this thread, between
    model batches. Off a GPU ``prepare`` always runs inline.
    """
    if mode not in FEED_MODES:
        raise ValueError(f"feed mode {mode!r}: one of {FEED_MODES}")
    if begin is not None:
        batches = begun(batches, begin, lookahead)
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
