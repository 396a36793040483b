"""Near-duplicate images: how right the signature is, and how fast the Spark search is at 10^6 hashes.

Quality (what chose select.near_dup_distance and select.near_dup_colour_tolerance). Every image
goes through the real download path first (img2dataset's resizer at the default 256 px border +
JPEG 95, then ``near_dup.stored_signature``), as select sees it:
- coco_mini's 159 real photos (in the real test data that WIT_REAL_DATA names, when set), each
  with made copies: resized (×0.5), re-encoded (JPEG q30, WebP q50), cropped (3 % and 5 % off every side), watermarked (a
  credit line; a translucent box over 5 % of the picture);
- the sample web (1,200 pairs, seed 0): its planted copies (scenes.COPY_KINDS, ground truth
  ``near_dup_of`` / ``eval_copy_of``) against their originals and eval images.
For each (distance, colour tolerance): recall per kind of copy, the pairs of different pictures
that would match ("false pairs", out of all pairs), and for the sample web the pictures a
connected-components clustering would wrongly drop. Then the two-step rule select runs (candidates on the pHash keys
(whole, inner, zoomed, colour: near_dup.KEY_PAIRS) within select.near_dup_distance, confirmed by pipeline/copy_detect.py): recall per kind,
false pairs that confirm, the sample web's planted look-alikes merged, and for the photos copy
detection alone over every pair of 60 different photos (its own precision) with its cost per pair.

Scale: 10^6 synthetic 64-bit hashes (uniform, with 10,000 planted near-duplicates at 1–distance bits)
through ``near_dup.match_pairs`` + ``propagate_min_label`` on Spark local[2], with the bands
``choose_bands`` picks for that size, and with distance + 1 bands (exhaustive) on a 20,000-hash
subsample; recall of the planted pairs by bits flipped, hashes/s per core, the JVM's peak RSS. Baseline in the same run: brute-force
all-pairs popcount in numpy (vectorised) on a 20,000-hash subsample, extrapolated to 10^6. The
confirm step's cost at that scale: its measured pairs/s per core times the candidate pairs found.

  python -m bench near_dup [--quick]
"""

from __future__ import annotations

import glob
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

RESULTS = ROOT / "bench" / "results" / "near_dup.json"
RAW_THUMB_BYTES = 64 * 64 * 3  # the raw RGB thumbnail stored before it was compressed (the "before" figure)

DISTANCES = [0, 2, 4, 6, 8, 10, 12]
TOLERANCES = [None, 8, 12, 16, 24, 32]


# --- quality --------------------------------------------------------------------------------------


def _stored_signer():
    """bytes → (phash, colour grid, copy thumbnail) as download stores and hashes them (default config)."""
    from pipeline.config import DownloadConfig
    from pipeline.download import make_resizer
    from pipeline.near_dup import stored_signature

    dl = DownloadConfig()
    resizer = make_resizer(dl)

    def sign(data: bytes) -> tuple[int, np.ndarray, bytes]:
        img, w, h, ow, oh, err = resizer(io.BytesIO(data))
        if err is not None:
            raise ValueError(err)
        ph, grid, thumb = stored_signature(img, w, h, ow, oh, dl.resize_mode)
        return ph, np.array(grid, dtype=np.int16), thumb

    return sign


def _made_copies(data: bytes) -> dict[str, bytes]:
    """Copies of a real photo the way the web makes them."""
    from PIL import Image, ImageDraw

    im = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = im.size

    def enc(img, fmt="JPEG", **kw) -> bytes:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    out = {"resized_x0.5": enc(im.resize((w // 2, h // 2), Image.Resampling.LANCZOS), quality=90),
           "reencoded_jpeg_q30": enc(im, quality=30), "reencoded_webp_q50": enc(im, "WEBP", quality=50)}
    for f in (0.03, 0.05):
        dx, dy = int(w * f), int(h * f)
        out[f"cropped_{round(f * 100)}pct"] = enc(im.crop((dx, dy, w - dx, h - dy)), quality=90)
    text = im.copy()
    ImageDraw.Draw(text).text((int(w * 0.05), int(h * 0.9)), "\u00a9 photos.example", fill=(255, 255, 255))
    out["watermarked_text"] = enc(text, quality=90)
    box = im.convert("RGBA")
    layer = Image.new("RGBA", box.size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle([int(w * 0.6), int(h * 0.82), int(w * 0.97), int(h * 0.95)], fill=(255, 255, 255, 140))
    out["watermarked_box"] = enc(Image.alpha_composite(box, layer).convert("RGB"), quality=90)
    return out


def _colour_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int32) - b.astype(np.int32)).max(axis=-1)


def _pair_table(hashes: np.ndarray, grids: np.ndarray, groups: np.ndarray, max_d: int) -> tuple[np.ndarray, int]:
    """Every pair of different pictures (group ids differ) within ``max_d`` bits: rows (i, j, dist,
    colour diff), by brute force (measurement only), and the number of such pairs in all."""
    from pipeline.near_dup import popcount64

    out = []
    n = len(hashes)
    total = 0
    for i in range(n - 1):
        d = popcount64(hashes[i] ^ hashes[i + 1:])
        other = groups[i + 1:] != groups[i]
        total += int(other.sum())
        j = np.flatnonzero((d <= max_d) & other)
        if len(j):
            out.append(np.stack([np.full(len(j), i), i + 1 + j, d[j], _colour_diff(grids[i], grids[i + 1 + j])], 1))
    return (np.concatenate(out) if out else np.zeros((0, 4), dtype=np.int64)), total


def _wrongly_dropped(n: int, pairs: np.ndarray) -> int:
    """Pictures a connected-components clustering of these (false) pairs drops: n - components."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not len(pairs):
        return 0
    k, _ = connected_components(coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)), directed=False)
    return n - k


def _grid(copies: dict[str, list[tuple[int, int]]], false_pairs: np.ndarray, n_pairs: int, n_images: int | None) -> list[dict]:
    rows = []
    for d in DISTANCES:
        for tol in TOLERANCES:
            row = {"distance": d, "colour_tolerance": tol, "recall": {}}
            for kind, v in copies.items():
                a = np.array(v)
                ok = (a[:, 0] <= d) & ((a[:, 1] <= tol) if tol is not None else True)
                row["recall"][kind] = round(float(ok.mean()), 4)
            m = (false_pairs[:, 2] <= d) & ((false_pairs[:, 3] <= tol) if tol is not None else True)
            row["false_pairs"] = int(m.sum())
            row["false_pair_rate"] = float(m.sum() / n_pairs) if n_pairs else 0.0
            if n_images is not None:
                row["wrongly_dropped"] = _wrongly_dropped(n_images, false_pairs[m][:, :2].astype(np.int64))
                row["wrongly_dropped_share"] = round(row["wrongly_dropped"] / n_images, 4)
            rows.append(row)
    return rows


def quality_coco(sign) -> dict | None:
    from bench import real_data
    from pipeline.near_dup import hamming

    folder = real_data()  # WIT_REAL_DATA (`make bench` sets it); without it the real-photo part is skipped
    files = sorted(glob.glob(str(folder / "coco_mini" / "*" / "*.jpg"))) if folder else []
    if not files:
        return None
    hashes, grids, thumbs, copies, confirmed = [], [], [], {}, {}
    for f in files:
        data = Path(f).read_bytes()
        h, g, t = sign(data)
        hashes.append(h)
        grids.append(g)
        thumbs.append(t)
        for kind, b in _made_copies(data).items():
            ch, cg, ct = sign(b)
            copies.setdefault(kind, []).append((hamming(h, ch), int(_colour_diff(g, cg))))
            confirmed.setdefault(kind, []).append((_key_distance(h, t, ch, ct), _confirmed(t, ct)))
    hashes_a, grids_a = np.array(hashes, dtype=np.int64), np.array(grids)
    false_pairs, n_pairs = _pair_table(hashes_a, grids_a, np.arange(len(files)), max(DISTANCES))
    # Copy detection alone over every pair of different photos among the first 60 (no hash in front):
    # its own precision, whatever the hash would have proposed.
    every = [(i, j) for i in range(min(60, len(files))) for j in range(i + 1, min(60, len(files)))]
    t0 = time.process_time()
    false_confirmed = sum(_confirmed(thumbs[i], thumbs[j]) for i, j in every)
    per_pair = (time.process_time() - t0) / len(every)
    return {"images": len(files), "thumbnail_bytes": _thumb_bytes(thumbs), "pairs_of_different_pictures": n_pairs,
            "closest_different_pictures": _closest(hashes_a),
            "grid": _grid(copies, false_pairs, n_pairs, None),
            "two_step": _two_step(copies, confirmed, false_pairs, thumbs),
            "confirm_only": {"recall": {k: round(float(np.mean([ok for _, ok in v])), 4) for k, v in confirmed.items()},
                             "false_pairs": int(false_confirmed), "of_pairs": len(every),
                             "ms_per_pair_one_core": round(1000 * per_pair, 2)}}


def _confirmed(a: bytes, b: bytes) -> bool:
    from pipeline.config import SelectConfig
    from pipeline.copy_detect import CopyThresholds, is_copy

    return is_copy(a, b, CopyThresholds.of(SelectConfig()))


def _key_distance(ha: int, ta: bytes, hb: int, tb: bytes) -> int:
    """The smallest distance of the candidate keys compared besides the whole pHash (near_dup.KEY_PAIRS)."""
    from pipeline.near_dup import candidate_keys, key_distances

    return min(key_distances(candidate_keys(ha, ta), candidate_keys(hb, tb))[1:])


def _two_step(copies: dict, confirmed: dict, false_pairs: np.ndarray, thumbs: list) -> dict:
    """At the configured pHash distance (pHash only, select's default): recall per kind of copy of
    candidate (any pair of keys, near_dup.key_distances) and confirm together, and the whole-pHash
    candidate pairs of different pictures that confirm."""
    from pipeline.config import SelectConfig

    d = SelectConfig().near_dup_distance
    recall = {k: round(float(np.mean([(c[0] <= d or inner <= d) and ok
                                      for c, (inner, ok) in zip(copies[k], confirmed[k], strict=True)])), 4)
              for k in copies}
    cand = false_pairs[false_pairs[:, 2] <= d]
    false = sum(_confirmed(thumbs[int(i)], thumbs[int(j)]) for i, j in cand[:, :2])
    return {"distance": d, "recall": recall, "candidate_false_pairs": int(len(cand)), "confirmed_false_pairs": int(false)}


def _thumb_bytes(thumbs: list[bytes]) -> dict:
    """Bytes per image of the stored copy thumbnails (mean, 90th percentile) against the raw RGB form."""
    n = np.array([len(t) for t in thumbs])
    return {"mean": int(n.mean()), "p90": int(np.percentile(n, 90)), "raw_rgb_before": RAW_THUMB_BYTES}


def _closest(hashes: np.ndarray) -> int:
    from pipeline.near_dup import popcount64

    return int(min(popcount64(hashes[i] ^ hashes[i + 1:]).min() for i in range(len(hashes) - 1)))


def quality_sample_web(sign, n_pairs: int, workdir: str) -> dict:
    import pyarrow.parquet as pq

    from pipeline.near_dup import hamming
    from pipeline.sample_web import generate_sample_web

    root = Path(workdir) / "sample"
    generate_sample_web(str(root), n_pairs=n_pairs, seed=0)
    gt = pq.read_table(root / "ground_truth.parquet").to_pylist()
    # One picture per file; a copy's group is its original's (or its eval image's) group.
    files: dict[str, int] = {}
    group_of_pair: dict[int, str] = {}
    for r in gt:
        if r["image_path"] and r["fault"] is None:
            files.setdefault(f"site/{r['image_path']}", len(files))
            group_of_pair[r["pair_id"]] = r["eval_copy_of"] or f"site/{r['image_path']}"
    for r in gt:
        if r["near_dup_of"] is not None:
            group_of_pair[r["pair_id"]] = group_of_pair[r["near_dup_of"]]
    evals = sorted({e for r in gt for e in (r["eval_copy_of"], r["eval_look_alike_of"]) if e})
    for e in evals:
        files.setdefault(e, len(files))
    group = {}
    for r in gt:
        if r["image_path"] and r["fault"] is None:
            group[f"site/{r['image_path']}"] = group_of_pair[r["pair_id"]]
    for e in evals:
        group[e] = e
    paths = sorted(files, key=files.get)
    sigs = [sign((root / p).read_bytes()) for p in paths]
    hashes = np.array([s[0] for s in sigs], dtype=np.int64)
    grids = np.array([s[1] for s in sigs])
    thumbs = [s[2] for s in sigs]
    names = sorted(set(group.values()))
    gid = np.array([names.index(group[p]) for p in paths])
    index = {p: i for i, p in enumerate(paths)}
    copies: dict[str, list] = {}
    confirmed: dict[str, list] = {}
    looks: dict[str, list] = {}
    for r in gt:
        source = r["look_alike_of"] if r["look_alike_of"] is not None else r["eval_look_alike_of"]
        if r["look_alike_kind"] and r["junk_kind"] is None and r["image_path"]:
            src = r["eval_look_alike_of"] or f"site/{next(o['image_path'] for o in gt if o['pair_id'] == source)}"
            i, j = index[f"site/{r['image_path']}"], index[src]
            looks.setdefault(r["look_alike_kind"], []).append(
                (min(hamming(int(hashes[i]), int(hashes[j])), _key_distance(int(hashes[i]), thumbs[i], int(hashes[j]), thumbs[j])),
                 _confirmed(thumbs[i], thumbs[j])))
        if r["copy_kind"] is None:
            continue
        src = r["eval_copy_of"] or f"site/{next(o['image_path'] for o in gt if o['pair_id'] == r['near_dup_of'])}"
        i, j = index[f"site/{r['image_path']}"], index[src]
        kind = ("eval_" if r["eval_copy_of"] else "") + r["copy_kind"]
        copies.setdefault(kind, []).append((hamming(int(hashes[i]), int(hashes[j])),
                                            int(_colour_diff(grids[i], grids[j]))))
        confirmed.setdefault(kind, []).append((_key_distance(int(hashes[i]), thumbs[i], int(hashes[j]), thumbs[j]),
                                               _confirmed(thumbs[i], thumbs[j])))
    false_pairs, n_diff = _pair_table(hashes, grids, gid, max(DISTANCES))
    from pipeline.config import SelectConfig

    d = SelectConfig().near_dup_distance
    two = _two_step(copies, confirmed, false_pairs, thumbs)
    two["look_alikes_merged"] = {k: round(float(np.mean([h <= d and ok for h, ok in v])), 4) for k, v in looks.items()}
    two["look_alikes"] = {k: len(v) for k, v in looks.items()}
    return {"pairs": n_pairs, "images": len(paths), "thumbnail_bytes": _thumb_bytes(thumbs), "copies": {k: len(v) for k, v in sorted(copies.items())},
            "pairs_of_different_pictures": n_diff, "grid": _grid(copies, false_pairs, n_diff, len(paths)),
            "two_step": two}


# --- scale ----------------------------------------------------------------------------------------


def planted_hashes(n: int, n_planted: int, max_flip: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uniform 64-bit hashes of which ``n_planted`` are copies of others with 1..max_flip
    bits flipped; returns (hashes as int64, planted pairs (i, j, distance))."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, n, dtype=np.int64) ^ (rng.integers(0, 2, n, dtype=np.int64) << 63)
    copies = rng.choice(n, n_planted, replace=False)
    rest = np.setdiff1d(np.arange(n), copies)
    sources = rng.choice(rest, n_planted, replace=True)
    flips = rng.integers(1, max_flip + 1, n_planted)
    for c, s, k in zip(copies, sources, flips, strict=True):
        bits = rng.choice(64, k, replace=False)
        h[c] = h[s] ^ np.int64(np.bitwise_or.reduce(np.uint64(1) << bits.astype(np.uint64)).view(np.int64))
    return h, np.stack([np.minimum(copies, sources), np.maximum(copies, sources), flips], 1)


def brute_force_rate(h: np.ndarray, distance: int) -> tuple[float, int]:
    """Pairs/s of vectorised all-pairs popcount (one core) on ``h``, and the pairs found."""
    from pipeline.near_dup import popcount64

    found = 0
    t0 = time.process_time()
    for i in range(len(h) - 1):
        found += int((popcount64(h[i] ^ h[i + 1:]) <= distance).sum())
    cpu = time.process_time() - t0
    n = len(h)
    return n * (n - 1) / 2 / cpu, found


def _jvm_peak_rss_mib(spark) -> float | None:
    try:
        pid = spark.sparkContext._gateway.proc.pid
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except Exception:
        return None
    return None


def spark_search(spark, h: np.ndarray, distance: int, bands: int, workdir: str) -> dict:
    """match_pairs + propagate_min_label over ``h`` as select runs them (ids = row numbers)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from pipeline.near_dup import match_pairs, propagate_min_label

    path = f"{workdir}/hashes-{len(h)}-{bands}.parquet"
    pq.write_table(pa.table({"id": np.arange(len(h), dtype=np.int64), "phash": h,
                             "colour_grid": pa.nulls(len(h), pa.list_(pa.int16()))}), path, row_group_size=100_000)
    nodes = spark.read.parquet(path).withColumn("label", F.col("id"))
    t0 = time.perf_counter()
    edges = (match_pairs(nodes, nodes, distance, bands, None, same=True)
             .select(F.col("left_id").alias("a"), F.col("right_id").alias("b"), "dist").cache())
    n_edges = edges.count()
    t_pairs = time.perf_counter() - t0
    labels, rounds = propagate_min_label(edges.select("a", "b"), nodes.select("id", "label"))
    dropped = labels.where(F.col("label") != F.col("id")).count()
    wall = time.perf_counter() - t0
    found = {(int(r["a"]), int(r["b"])) for r in edges.select("a", "b").collect()} if n_edges <= 2_000_000 else set()
    edges.unpersist()
    return {"hashes": len(h), "bands": bands, "pairs_found": n_edges, "pairs_s": round(t_pairs, 2),
            "components_rounds": rounds, "dropped": dropped, "wall_s": round(wall, 2), "_found": found}


def confirm_rate(n: int = 1000) -> float:
    """Pairs/s (one core) of copy detection on thumbnails (its cost does not depend on the content)."""
    from PIL import Image

    from pipeline.copy_detect import copy_scores, thumbnail

    noise = np.random.default_rng(0).integers(0, 256, (n + 1, 64, 64, 3), dtype=np.uint8)
    t = [thumbnail(Image.fromarray(x)) for x in noise]
    t0 = time.process_time()
    for i in range(n):
        copy_scores(t[i], t[i + 1])
    return n / (time.process_time() - t0)


def measure_scale(quick: bool, workdir: str) -> dict:
    from pipeline.config import SelectConfig, SparkConfig
    from pipeline.near_dup import choose_bands, expected_candidates
    from pipeline.spark import get_spark

    distance = SelectConfig().near_dup_distance
    n = 100_000 if quick else 1_000_000
    planted = n // 100
    h, truth = planted_hashes(n, planted, distance)
    cores = 2
    spark = get_spark(SparkConfig(master=f"local[{cores}]", driver_memory="3g", shuffle_partitions=16))
    res: dict = {"distance": distance, "cores": cores, "planted_pairs": planted}
    runs = []
    auto = choose_bands(n, distance)
    for bands in [auto]:
        r = spark_search(spark, h, distance, bands, workdir)
        found = r.pop("_found")
        hit = np.array([(int(a), int(b)) in found for a, b, _ in truth])
        r["expected_candidates_per_hash"] = round(expected_candidates(n, bands), 1)
        r["recall_by_flipped_bits"] = {int(k): round(float(hit[truth[:, 2] == k].mean()), 4) for k in range(1, distance + 1)}
        r["recall"] = round(float(hit.mean()), 4)
        r["hashes_per_s_per_core"] = round(n / r["wall_s"] / cores, 1)
        r["auto"] = bands == auto
        runs.append(r)
        print(f"  spark local[{cores}]: {n:,} hashes, {bands} bands: {r['pairs_found']:,} pairs in {r['wall_s']:.1f}s "
              f"({r['hashes_per_s_per_core']:,.0f} hashes/s/core), recall of planted {r['recall']:.3f}", flush=True)
    # Exhaustive bands (distance + 1) on a subsample the machine affords, to show what pigeonhole buys.
    sub_n = 20_000  # 9 bands of 7 bits: ~n/128 × 9 candidates per hash, more work than brute force here
    hs, ts = planted_hashes(sub_n, sub_n // 100, distance, seed=1)
    r = spark_search(spark, hs, distance, distance + 1, workdir)
    found = r.pop("_found")
    r["recall"] = round(float(np.mean([(int(a), int(b)) in found for a, b, _ in ts])), 4)
    r["hashes_per_s_per_core"] = round(sub_n / r["wall_s"] / cores, 1)
    runs.append(r)
    print(f"  exhaustive ({distance + 1} bands) on {sub_n:,}: recall {r['recall']:.3f} in {r['wall_s']:.1f}s", flush=True)
    res["jvm_peak_rss_mib"] = _jvm_peak_rss_mib(spark)
    res["runs"] = runs
    # The confirm step (copy detection on each candidate within the distance), from its measured rate.
    rate = confirm_rate()
    auto_run = runs[0]
    confirm_s = auto_run["pairs_found"] / rate / cores
    res["confirm"] = {"pairs_per_s_per_core": round(rate, 1), "pairs": auto_run["pairs_found"],
                      "estimated_s": round(confirm_s, 2),
                      "share_of_time": round(confirm_s / (confirm_s + auto_run["wall_s"]), 4)}
    print(f"  confirm: {rate:,.0f} pairs/s/core; {auto_run['pairs_found']:,} candidate pairs → ~{confirm_s:.1f}s "
          f"({res['confirm']['share_of_time']:.1%} of the search)", flush=True)
    # Baseline: brute force, all pairs, numpy, one core.
    base_n = 5_000 if quick else 20_000
    rate, _ = brute_force_rate(h[:base_n], distance)
    all_pairs = n * (n - 1) / 2
    best = min(r["wall_s"] for r in runs if r["hashes"] == n)
    res["baseline"] = {"method": "all-pairs popcount, numpy, 1 core", "sample": base_n, "pairs_per_s": round(rate),
                       "extrapolated_s_one_core": round(all_pairs / rate), "extrapolated_s_per_core_count": round(all_pairs / rate / cores)}
    res["speedup_vs_brute_force_same_cores"] = round(all_pairs / rate / cores / best, 1)
    print(f"  baseline brute force: {rate:,.0f} pairs/s/core → {all_pairs / rate / cores:,.0f}s for {n:,} hashes on "
          f"{cores} cores; ours {best:.1f}s ({res['speedup_vs_brute_force_same_cores']}x)", flush=True)
    return res


def main(quick: bool = False) -> dict:
    sign = _stored_signer()
    res: dict = {"quick": quick}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res["coco"] = quality_coco(sign)
        res["sample_web"] = quality_sample_web(sign, 600 if quick else 1200, tmp)
        print(f"  quality measured in {time.perf_counter() - t0:.0f}s", flush=True)
        for name in ("coco", "sample_web"):
            q = res[name]
            if q is None:
                continue
            for row in q["grid"]:
                if row["distance"] in (4, 6, 8, 10) and row["colour_tolerance"] in (None, 12, 16, 24):
                    print(f"  {name:10s} d<={row['distance']:2d} colour<={row['colour_tolerance']!s:4s} "
                          f"recall {json.dumps(row['recall'])} false pairs {row['false_pairs']}"
                          + (f" wrongly dropped {row['wrongly_dropped_share']:.1%}" if "wrongly_dropped" in row else ""))
            print(f"  {name:10s} two-step {json.dumps(q['two_step'])}")
            if "confirm_only" in q:
                print(f"  {name:10s} confirm only {json.dumps(q['confirm_only'])}")
        res["scale"] = measure_scale(quick, tmp)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if not quick:
        RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv):
        print(__doc__)
    else:
        main(quick="--quick" in sys.argv)
