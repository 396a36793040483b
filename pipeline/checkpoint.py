"""Where a training run keeps its checkpoint, and reading it back: what train (which writes it) and
eval (which loads it) share, so neither imports the other for it."""

from __future__ import annotations

import os

from pipeline import storage
from pipeline.config import RunConfig, join_path

CHECKPOINT = "epoch_latest.pt"  # open_clip's name for its latest checkpoint


def checkpoint_path(output: str) -> str:
    """The checkpoint of the training run in ``output`` (the latest, overwritten as the run goes)."""
    return join_path(output, "checkpoints", CHECKPOINT)


def latest_checkpoint(cfg: RunConfig) -> str | None:
    """This run's training checkpoint, where a local one exists (open_clip loads local files only)."""
    path = checkpoint_path(cfg.path("train"))
    return path if os.path.isfile(path) else None


def load_checkpoint(path: str) -> dict:
    """A checkpoint's dict (state_dict, optimizer, step, …) from any fsspec path, on the CPU."""
    import torch

    fs, p = storage.fs_for(path)
    with fs.open(p, "rb") as f:
        return torch.load(f, map_location="cpu", weights_only=True)
