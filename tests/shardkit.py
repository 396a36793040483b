"""Write download-stage shards (img2dataset layout) for score/select tests, with real JPEGs.

``write_shards(folder, samples, shard_size)``: each sample is a dict with ``text`` and ``image``
(JPEG/PNG bytes, or None for a failed download) and optional metadata columns; writes
NNNNN.tar (key.jpg/key.txt/key.json) + NNNNN.parquet (schemas.SHARD_METADATA) like `wit download`.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

import schemas
from pipeline.ids import make_uid


def jpeg(w: int, h: int, seed: int, quality: int = 90, fmt: str = "JPEG") -> bytes:
    """A reproducible noisy-gradient image (not constant: its embedding must depend on it)."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * rng.random(3)[None, None, :]
    arr = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, quality=quality)
    return buf.getvalue()


def write_shards(folder, samples: list[dict], shard_size: int = 10) -> list[dict]:
    """Write the samples into shards; returns the metadata rows (with uid, key, shard)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows_all = []
    for shard, start in enumerate(range(0, len(samples), shard_size)):
        rows = []
        with wds.TarWriter(str(folder / f"{shard:05d}.tar")) as tw:
            for i, s in enumerate(samples[start:start + shard_size]):
                url = s.get("url") or f"http://127.0.0.1/img/{start + i}.jpg"
                key = f"{shard:05d}{i:04d}"
                img = s.get("image")
                ok = img is not None
                row = {
                    "uid": make_uid(url, s["text"]), "url": url, "text": s["text"], "text_source": "alt",
                    "page_url": "http://127.0.0.1/p.html", "source_file": "test", "lang": "en", "lang_score": 0.99,
                    "entry_ids": [1], "keep_prob": 1.0, "key": key, "shard": shard,
                    "status": "success" if ok else "failed", "error_message": None if ok else s.get("error", "http_404"),
                    "width": s.get("width"), "height": s.get("height"),
                    "original_width": s.get("width"), "original_height": s.get("height"),
                    "bytes": len(img) if ok else None,
                    "sha256": hashlib.sha256(img).hexdigest() if ok else None,
                }
                if ok:
                    ext = s.get("ext", "jpg")
                    tw.write({"__key__": key, ext: img, "txt": s["text"], "json": json.dumps(row).encode()})
                rows.append(row)
        table = schemas.conform(pa.Table.from_pylist(rows), schemas.SHARD_METADATA)
        pq.write_table(table, folder / f"{shard:05d}.parquet")
        rows_all.extend(rows)
    return rows_all
