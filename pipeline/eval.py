"""Judge a CLIP model the way the CLIP paper judged its data: zero-shot classification and retrieval.

Zero-shot: every class name is put into prompt templates (open_clip's lists), the text embeddings
are averaged per class, and an image is classified by its nearest class embedding (top-1/top-5).
The labelled set is a folder with one sub-folder per class (``eval/<class>/*.jpg``, ImageFolder
layout) and an optional ``classes.json`` (list of class names, index = label). Several folders can
be given: each gets its own zero-shot result, the first is the headline one.

Retrieval: held-out (image, caption) pairs, from a parquet (image path + caption columns) or from
webdataset shards; recall@1/5/10 in both directions. An image with several captions (COCO) counts
as found by image→text when any of its captions is in the top k.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from pipeline import storage
from pipeline.checkpoint import latest_checkpoint
from pipeline.config import RunConfig, join_path
from pipeline.errors import UserError
from pipeline.log import info, warn
from pipeline.stage import Flag, StageContext, stage

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
IMAGE_COLUMNS = ("image", "image_path", "filepath", "path", "file_name")
CAPTION_COLUMNS = ("caption", "true_caption", "text", "title")
RECALL_AT = (1, 5, 10)


def resolve_templates(templates: str | Sequence[str]) -> list:
    """``simple`` / ``openai`` → open_clip's ImageNet template lists; a list of ``{}`` strings as given."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    if isinstance(templates, str):
        sets = {"simple": SIMPLE_IMAGENET_TEMPLATES, "openai": OPENAI_IMAGENET_TEMPLATES}
        if templates not in sets:
            raise UserError(f"train.templates: unknown template set {templates!r}; use simple, openai or a list of '{{}}' strings")
        return list(sets[templates])
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise UserError(f"train.templates: each template needs a '{{}}' for the class name, got {bad or templates!r}")
    return list(templates)


def load_labelled_folder(folder: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names and (image path, label) pairs of an ImageFolder-style folder."""
    if not os.path.isdir(folder):
        raise UserError(f"labelled eval folder not found: {folder} (one sub-folder of images per class)")
    subdirs = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    classes_file = os.path.join(folder, "classes.json")
    classes = json.load(open(classes_file)) if os.path.isfile(classes_file) else subdirs
    items = []
    for label, name in enumerate(classes):
        sub = next((d for d in (name, str(label)) if d in subdirs), None)
        if sub is None:
            continue
        for f in sorted(os.listdir(os.path.join(folder, sub))):
            if f.lower().endswith(IMAGE_EXTS):
                items.append((os.path.join(folder, sub, f), label))
    if not items:
        raise UserError(f"no images under {folder}/<class>/ (expected {', '.join(IMAGE_EXTS)} files)")
    return list(classes), items


def _read_bytes(src: str | bytes) -> bytes:
    if isinstance(src, bytes):
        return src
    with open(src, "rb") as f:
        return f.read()


def encode_images(model, preprocess, sources: Sequence[str | bytes], device, batch_size: int = 128):
    """L2-normalised image embeddings of image files or bytes; unreadable ones are skipped.

    Returns (features [n_ok, d], indices of the sources that were encoded).
    """
    import torch

    from pipeline.image_decode import decode_image

    feats, kept, batch, batch_idx = [], [], [], []

    def flush():
        with torch.no_grad():
            x = torch.stack(batch).to(device)
            feats.append(model.encode_image(x, normalize=True).float().cpu())
        kept.extend(batch_idx)
        batch.clear()
        batch_idx.clear()

    for i, src in enumerate(sources):
        try:
            batch.append(decode_image(_read_bytes(src), preprocess, rgb_first=True))
        except Exception as e:  # noqa: BLE001 - a bad eval image is reported and skipped
            warn(f"eval: skipping unreadable image #{i}: {e}")
            continue
        batch_idx.append(i)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    if not feats:
        raise UserError("eval: no readable images")
    return torch.cat(feats), kept


def encode_texts(model, tokenizer, texts: Sequence[str], device, batch_size: int = 256):
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            tok = tokenizer(list(texts[i : i + batch_size])).to(device)
            out.append(model.encode_text(tok, normalize=True).float().cpu())
    return torch.cat(out)


def zero_shot(model, preprocess, tokenizer, folder: str, device="cpu", templates: str | Sequence[str] = "simple",
              batch_size: int = 128) -> dict[str, Any]:
    """Top-1/top-5 zero-shot accuracy on a labelled folder (class names × templates → classifier)."""
    import torch
    from open_clip import build_zero_shot_classifier

    classes, items = load_labelled_folder(folder)
    was_training = model.training
    model.eval()
    classifier = build_zero_shot_classifier(
        model, tokenizer, classes, resolve_templates(templates), num_classes_per_batch=10, device=device
    ).float().cpu()
    feats, kept = encode_images(model, preprocess, [p for p, _ in items], device, batch_size)
    model.train(was_training)
    labels = torch.tensor([items[i][1] for i in kept])
    logits = feats @ classifier
    k = min(5, len(classes))
    topk = logits.topk(k, dim=1).indices
    return {
        "top1": float((topk[:, 0] == labels).float().mean()),
        "top5": float((topk == labels[:, None]).any(dim=1).float().mean()),
        "n_images": len(kept),
        "n_classes": len(classes),
        "chance_top1": 1.0 / len(classes),
    }


def load_pairs(path: str, max_pairs: int = 5000) -> tuple[list[str | bytes], list[str], list[int]]:
    """Held-out pairs → (images, captions, image index of each caption).

    ``path``: a parquet with an image-path column (relative to the parquet's folder) and a caption
    column, or webdataset shards (folder, .tar file or brace pattern). Captions of the same image
    are grouped under one image.
    """
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        if not os.path.isfile(path):
            raise UserError(f"eval pairs not found: {path}")
        table = pq.read_table(path)
        img_col = next((c for c in IMAGE_COLUMNS if c in table.column_names), None)
        cap_col = next((c for c in CAPTION_COLUMNS if c in table.column_names), None)
        if img_col is None or cap_col is None:
            raise UserError(f"{path}: needs an image column ({'/'.join(IMAGE_COLUMNS)}) and a caption column ({'/'.join(CAPTION_COLUMNS)})")
        base = os.path.dirname(os.path.abspath(path))
        rows = [(p, c) for p, c in zip(table[img_col].to_pylist(), table[cap_col].to_pylist()) if p and c]
        rows = [(p if os.path.isabs(p) else os.path.join(base, p), c) for p, c in rows]
    else:
        rows = [(img, cap) for img, cap in _shard_pairs(path)]
    images: list[str | bytes] = []
    index: dict[Any, int] = {}
    captions, owner = [], []
    for img, cap in rows:
        key = img if isinstance(img, str) else hash(img)
        if key not in index:
            if len(images) >= max_pairs:
                continue
            index[key] = len(images)
            images.append(img)
        captions.append(cap)
        owner.append(index[key])
    if not images:
        raise UserError(f"no (image, caption) pairs in {path}")
    return images, captions, owner


def _shard_pairs(path: str):
    import webdataset as wds

    from pipeline.shard_data import shard_urls
    from pipeline.shards import IMAGE_EXTS as SHARD_IMAGE_KEYS

    ds = wds.WebDataset(shard_urls(path), shardshuffle=False, handler=wds.warn_and_continue, empty_check=False)
    for s in ds:
        img = next((s[k] for k in SHARD_IMAGE_KEYS if k in s), None)
        if img is not None and "txt" in s:
            yield img, s["txt"].decode("utf-8", "replace")


def retrieval(model, preprocess, tokenizer, pairs_path: str, device="cpu", batch_size: int = 128,
              max_pairs: int = 5000) -> dict[str, Any]:
    """Image→text and text→image recall@1/5/10 on held-out pairs."""
    import torch

    images, captions, owner = load_pairs(pairs_path, max_pairs)
    was_training = model.training
    model.eval()
    img_feats, kept = encode_images(model, preprocess, images, device, batch_size)
    txt_feats = encode_texts(model, tokenizer, captions, device)
    model.train(was_training)
    # Keep the captions whose image could be read; renumber images to rows of img_feats.
    row_of = {img_i: r for r, img_i in enumerate(kept)}
    cap_keep = [j for j, o in enumerate(owner) if o in row_of]
    txt_feats = txt_feats[cap_keep]
    cap_img = torch.tensor([row_of[owner[j]] for j in cap_keep])
    sim = img_feats @ txt_feats.T  # [images, texts]
    out: dict[str, Any] = {"n_images": len(kept), "n_texts": len(cap_keep)}
    for k in RECALL_AT:
        kt = min(k, sim.shape[1])
        top_txt = sim.topk(kt, dim=1).indices  # texts per image
        out[f"image_to_text_R@{k}"] = float((cap_img[top_txt] == torch.arange(len(kept))[:, None]).any(1).float().mean())
        ki = min(k, sim.shape[0])
        top_img = sim.T.topk(ki, dim=1).indices  # images per text
        out[f"text_to_image_R@{k}"] = float((top_img == cap_img[:, None]).any(1).float().mean())
    out["chance_text_to_image_R@1"] = 1.0 / len(kept)
    return out


def default_pairs(eval_dir: str | None) -> str | None:
    if eval_dir is None:
        return None
    p = os.path.join(eval_dir, "pairs.parquet")
    return p if os.path.isfile(p) else None


def labelled_folders(eval_dir: str | Sequence[str] | None, cfg: RunConfig) -> list[str]:
    """``train.eval_dir`` as a list; None = every labelled split of this run's sample web."""
    if eval_dir is None:
        from pipeline.sample_web.labelled import LABELLED_SPLITS

        return [join_path(cfg.path("sample"), name) for name in LABELLED_SPLITS]
    return [eval_dir] if isinstance(eval_dir, str) else list(eval_dir)


def evaluate(model, preprocess, tokenizer, eval_dirs: Sequence[str], pairs: str | None, device="cpu",
             templates: str | Sequence[str] = "simple") -> dict[str, Any]:
    """Zero-shot on each labelled folder (the list ``labelled_folders`` makes of the config) and
    retrieval on ``pairs`` (default: the pairs.parquet of the first folder evaluated).

    ``zeroshot`` is the first evaluated folder's result (the headline), ``zeroshot_splits`` every
    folder's, by folder name; a folder that is missing or unusable (no images, none readable) is
    skipped with a warning and its reason kept in ``zeroshot_skipped``, so a bad eval folder never
    fails a finished training run."""
    out: dict[str, Any] = {"zeroshot": None, "zeroshot_splits": {}, "zeroshot_skipped": {}, "pairs": None, "retrieval": None}
    evaluated = []
    for folder in eval_dirs:
        try:
            if not os.path.isdir(folder):
                raise UserError(f"no labelled folder at {folder}")
            z = zero_shot(model, preprocess, tokenizer, folder, device, templates)
        except UserError as e:
            warn(f"eval: {e}; zero-shot skipped")
            out["zeroshot_skipped"][folder] = str(e)
            continue
        name = os.path.basename(os.path.normpath(folder))
        out["zeroshot_splits"][folder if name in out["zeroshot_splits"] else name] = z  # two "eval/": full path
        out["zeroshot"] = out["zeroshot"] or z
        evaluated.append(folder)
        info(f"eval: zero-shot top1 {z['top1']:.3f} top5 {z['top5']:.3f} on {z['n_images']} images of {folder}, "
             f"{z['n_classes']} classes (chance {z['chance_top1']:.3f})")
    out["pairs"] = pairs = pairs or default_pairs(evaluated[0] if evaluated else None)
    if pairs and (os.path.exists(pairs) or "{" in pairs or "*" in pairs):
        out["retrieval"] = r = retrieval(model, preprocess, tokenizer, pairs, device)
        info(f"eval: retrieval i→t R@1/5/10 {r['image_to_text_R@1']:.3f}/{r['image_to_text_R@5']:.3f}/{r['image_to_text_R@10']:.3f}, "
             f"t→i {r['text_to_image_R@1']:.3f}/{r['text_to_image_R@5']:.3f}/{r['text_to_image_R@10']:.3f} on {r['n_images']} images")
    else:
        warn(f"eval: no held-out pairs at {pairs}; retrieval skipped")
    return out


def _show(result: dict) -> str:
    return json.dumps(result, indent=2)


@stage("eval", order=110, input=None, output=None, writes="view", in_run=False, spark=False, show=_show,
       help="zero-shot accuracy and retrieval recall of a CLIP checkpoint",
       description="Zero-shot top-1/top-5 on labelled folders (<class>/*.jpg + optional classes.json; default "
       "the sample web's eval/ and eval_background/ under output_dir/sample) and image<->text recall@1/5/10 on "
       "held-out pairs (parquet of image path + caption, default the first evaluated folder's pairs.parquet, or "
       "webdataset shards). Default checkpoint: output_dir/train/checkpoints/epoch_latest.pt.",
       input_help="checkpoint path or open_clip pretrained tag (default: this run's latest)", positional="?",
       output_help="also write the result as JSON to this file",
       options=[Flag("--model", key="train.model", metavar="ARCH",
                     help="open_clip architecture of the checkpoint (config train.model)"),
                Flag("--eval-dir", key="train.eval_dir", metavar="DIR",
                     help="labelled folder (config train.eval_dir: one or a list)"),
                Flag("--pairs", key="train.eval_pairs", metavar="PATH",
                     help="held-out pairs: parquet or shards (config train.eval_pairs)"),
                Flag("--device", key="train.device", metavar="DEV")])
def run_eval(ctx: StageContext, eval_dir: str | Sequence[str] | None = None, pairs: str | None = None) -> dict[str, Any]:
    """Evaluate the checkpoint ``input`` (a path or an open_clip tag; default: this run's latest
    training checkpoint, else ``train.pretrained``) on ``eval_dir`` and ``pairs`` (default: the
    config's); also write the result as JSON to ``output`` when given. Not a dataset stage: it
    writes no _SUCCESS and runs here (no Spark)."""
    from pipeline.models import load_clip, resolve_device

    cfg, t = ctx.cfg, ctx.cfg.train
    ckpt = ctx.input or latest_checkpoint(cfg) or t.pretrained
    folders = labelled_folders(eval_dir or t.eval_dir, cfg)
    pairs = pairs or t.eval_pairs
    device = resolve_device(t.device)
    info(f"eval: {t.model} from {ckpt or 'random init'} on {device}")
    model, preprocess, tokenizer = load_clip(t.model, ckpt, device)
    result = {"model": t.model, "checkpoint": ckpt, "eval_dir": folders}
    result.update(evaluate(model, preprocess, tokenizer, folders, pairs, device, t.templates))
    if ctx.output:
        storage.write_json(ctx.output, result)
    return result
