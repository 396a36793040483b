"""The sample web's labelled splits (eval/ by shape, eval_background/ by background colour): the
held-out images the demo's zero-shot evaluation reads, each from its own seed (never the web's), in
ImageFolder layout with classes.json and the held-out (image, caption) pairs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.sample_web import scenes

EVAL_PAIRS = pa.schema([("image", pa.string()), ("caption", pa.string()), ("label", pa.int64())])


# The labelled splits, ImageFolder layout: folder → (class of a scene, all classes). "eval" labels
# the object's shape (the natural class, but the slowest thing a small CLIP learns: colour and
# background tell almost every pair in a batch apart); "eval_background" labels the background
# colour, which a few CPU minutes of training already learn, so it shows zero-shot working end to end.
LABELLED_SPLITS = {
    "eval": (lambda s: s.shape, sorted(scenes.SHAPES)),
    "eval_background": (lambda s: f"{s.background} background", sorted(f"{c} background" for c in scenes.COLOUR_NAMES)),
}


EVAL_SIDE = 96


def labelled_scenes(name: str, seed: int, per_class: int) -> list[tuple[str, scenes.Scene, int]]:
    """(<class>/<n>.jpg, scene, label) of a labelled split, drawn from the split's own seed."""
    label_of, classes = LABELLED_SPLITS[name]
    rng = random.Random(f"{seed}-{name}")
    out = []
    for label, cls in enumerate(classes):
        for n in range(per_class):
            scene = scenes.random_scene(rng)
            while label_of(scene) != cls:
                scene = scenes.random_scene(rng)
            out.append((f"{cls}/{n}.jpg", scene, label))
    return out


def write_labelled_split(root: Path, name: str, seed: int, per_class: int) -> int:
    """A labelled split rendered from its own seed: <class>/<n>.jpg, classes.json (sorted) and
    pairs.parquet (each image with its true caption, for retrieval)."""
    _, classes = LABELLED_SPLITS[name]
    out = root / name
    for cls in classes:
        (out / cls).mkdir(parents=True)
    rows = []
    for rel, scene, label in labelled_scenes(name, seed, per_class):
        (out / rel).write_bytes(scenes.encode(scenes.render(scene, EVAL_SIDE, EVAL_SIDE), "jpg"))
        rows.append({"image": rel, "caption": scenes.english(scene), "label": label})
    (out / "classes.json").write_text(json.dumps(classes) + "\n")
    pq.write_table(pa.Table.from_pylist(rows, schema=EVAL_PAIRS), out / "pairs.parquet", compression="zstd")
    return len(rows)
