"""Load any open_clip model the same way everywhere (score, train, evaluate), and our tiny CPU model.

``load_clip`` takes an open_clip architecture name plus a pretrained tag (``laion2b_s34b_b79k``),
a local checkpoint path (``wit train``'s ``epoch_latest.pt`` or any open_clip checkpoint), or
``hf-hub:`` / ``local-dir:`` names; ``pretrained=None`` gives a random-init model with a loud
warning (tests, the tiny demo). It returns the model's *own* eval preprocessing and tokenizer, so
callers never re-implement resize / crop / normalise or tokenisation.

``wit-tiny`` is a small ViT CLIP (64-px images, 4+4 layers of width 192, 128-d embeddings,
context 32) registered with open_clip's model-config registry, so it works by name with
``open_clip.create_model_and_transforms("wit-tiny")`` and trains on a CPU in minutes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.log import warn

# Extra open_clip model configs we ship: name -> open_clip model config dict.
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "wit-tiny": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 192, "layers": 4, "head_width": 64},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 192, "heads": 3, "layers": 4},
    },
}

_registered_dir: str | None = None


def register_models() -> None:
    """Add our configs to open_clip's registry (idempotent; also called in every Spark worker).

    open_clip only reads configs from JSON files in registered folders, and re-scans them whenever
    anyone adds a folder, so the configs are written to a private temp folder that stays registered.
    """
    global _registered_dir
    import open_clip

    if _registered_dir is not None and all(n in open_clip.list_models() for n in MODEL_CONFIGS):
        return
    folder = tempfile.mkdtemp(prefix="wit-open-clip-configs-")
    for name, cfg in MODEL_CONFIGS.items():
        Path(folder, f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    _registered_dir = folder


def resolve_device(device: str | None = "auto"):
    """``auto`` → cuda when available, else cpu; anything else as torch spells it."""
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but torch sees no CUDA GPU (use --device cpu or auto)")
    return dev


def load_clip(model: str, pretrained: str | None = None, device: Any = "cpu", for_training: bool = False):
    """Return ``(model, preprocess, tokenizer)`` in eval mode on ``device``.

    ``preprocess`` is open_clip's validation transform for the model (PIL image → tensor) and
    ``tokenizer`` its tokenizer (list of str → LongTensor [n, context_length]).
    ``for_training``: random init is expected (no warning about meaningless scores).
    """
    import open_clip

    register_models()
    dev = resolve_device(device) if isinstance(device, (str, type(None))) else device
    schema = model.split(":", 1)[0] if ":" in model else None
    known = set(open_clip.list_models())
    if schema is None and model not in known:
        raise UserError(f"unknown open_clip model {model!r}; e.g. wit-tiny, ViT-B-32, ViT-L-14 (open_clip.list_models())")
    if schema is None and pretrained is None and not for_training:  # training from scratch is the normal case
        warn(
            f"model {model!r} has NO pretrained weights (random init): its CLIP scores are meaningless "
            "except for tests; set score.pretrained to an open_clip tag or a checkpoint path"
        )
    if pretrained and not os.path.isfile(pretrained) and (os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors"))):
        raise UserError(f"checkpoint not found: {pretrained}")
    if pretrained and not os.path.isfile(pretrained) and schema is None:
        tags = open_clip.list_pretrained_tags_by_model(model)
        if pretrained not in tags:
            raise UserError(
                f"no pretrained tag {pretrained!r} for {model}; known tags: {', '.join(tags) or 'none'} (or give a checkpoint path)"
            )
    import logging

    quiet = logging.getLogger().level
    if pretrained is None:  # our own warning above says it once, in our words
        logging.getLogger().setLevel(logging.ERROR)
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(
            model, pretrained=pretrained, device=dev, weights_only=False
        )
    except (RuntimeError, FileNotFoundError, KeyError) as e:
        raise UserError(f"could not load {model} (pretrained={pretrained}): {str(e).splitlines()[0]}") from None
    finally:
        logging.getLogger().setLevel(quiet)
    tokenizer = open_clip.get_tokenizer(model)
    clip.eval()
    return clip, preprocess, tokenizer
