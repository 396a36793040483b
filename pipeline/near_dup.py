"""Perceptual image signatures, and the near-duplicate search over them at Spark scale.

A signature is two things computed from one decode of the image:
- ``phash``: imagehash's 64-bit pHash (32×32 grey → 2-D DCT → the 8×8 lowest frequencies, a bit
  per coefficient above their median), stored as a signed int64 whose 16-hex form (two's
  complement, most significant bit first) is imagehash's own ``str(imagehash.phash(img))``, so
  hashes and blocklists written by other imagehash users compare as they are;
- ``colour_grid``: the mean R, G, B of the image's 2×2 grid cells (top-left, top-right,
  bottom-left, bottom-right; 12 values 0–255). pHash sees only grey-level structure: two flat
  pictures with a blob in the middle have nearly the same pHash whatever their colours, so a pair
  also needs its colour grids within ``colour_tolerance`` (bench/near_dup.py measured both).

Download takes the signature of the stored image (with ``resize_mode=border`` its white padding
cut away first, so it describes the picture and not its aspect ratio); decontamination hashes its
evaluation images with the same function; blocklists carry pHashes only.

The search never compares all pairs: the 64 bits are cut into ``bands`` bands; two hashes that
agree on a whole band are candidates, and a candidate is a match when its Hamming distance is at
most ``distance`` (and its colour grids agree). By pigeonhole every pair within
``distance < bands`` shares a band, so with enough bands the search is exhaustive; fewer, wider
bands cost less and miss some pairs (``choose_bands`` picks, bench/near_dup.py measures). The
candidates come from a Spark equi-join on (band, band value), each pair kept only in the first band
it shares, so the work is the sum over buckets of their squared sizes. Clusters are the connected
components of the matches: min-label propagation in Spark, where a node's label orders the best
member first, so every node ends up labelled with its cluster's best member.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import UserError

if TYPE_CHECKING:
    from pipeline.copy_detect import CopyThresholds

HASH_BITS = 64
MASK64 = (1 << HASH_BITS) - 1
GRID_VALUES = 12  # 2×2 cells × RGB
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
# The hash is taken at 32×32: a JPEG is decoded at a reduced scale (libjpeg's DCT scaling,
# Pillow's draft) as long as the content keeps at least this many pixels on its short side.
DRAFT_MIN_SIDE = 64
# choose_bands: the most candidate pairs per hash it lets the search cost (for uniform hashes).
CANDIDATES_PER_HASH = 500


# --- signatures -----------------------------------------------------------------------------------


def phash_image(img) -> int:
    """The 64-bit pHash of a PIL image as a signed int64 (imagehash.phash, bits MSB first)."""
    import imagehash

    bits = imagehash.phash(img).hash.reshape(-1)
    return int.from_bytes(np.packbits(bits).tobytes(), "big", signed=True)


def colour_grid(img) -> list[int]:
    """Mean R, G, B of the 2×2 cells of a PIL RGB image, cell by cell (row-major)."""
    from PIL import Image

    return [int(v) for v in np.asarray(img.resize((2, 2), Image.Resampling.BOX)).reshape(-1)]


def content_box(width: int, height: int, original_width: int | None, original_height: int | None,
                resize_mode: str) -> tuple[int, int, int, int] | None:
    """The box (left, top, right, bottom) of a stored image that holds the picture: with
    ``border`` the resized picture sits centred in white padding; None = the whole image."""
    if resize_mode != "border" or not original_width or not original_height:
        return None
    scale = min(width / original_width, height / original_height)
    cw, ch = max(1, round(original_width * scale)), max(1, round(original_height * scale))
    if cw >= width and ch >= height:
        return None
    left, top = (width - cw) // 2, (height - ch) // 2
    return left, top, left + cw, top + ch


def image_signature(data: bytes, box: tuple[int, int, int, int] | None = None) -> tuple[int, list[int], bytes]:
    """(phash, colour_grid, copy thumbnail) of encoded image bytes, of ``box`` only when given.
    Transparent pixels count as white (as download's resizer mattes them). Raises on undecodable bytes."""
    from PIL import Image

    from pipeline.copy_detect import thumbnail

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            bw, bh = (box[2] - box[0], box[3] - box[1]) if box else (w, h)
            scale = min(bw, bh) / DRAFT_MIN_SIDE
            if scale >= 2 and im.format == "JPEG":
                im.draft("RGB", (max(1, round(w / scale)), max(1, round(h / scale))))
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
            else:
                img = im.convert("RGB")
    if box is not None:
        fx, fy = img.size[0] / w, img.size[1] / h
        img = img.crop((round(box[0] * fx), round(box[1] * fy), round(box[2] * fx), round(box[3] * fy)))
    return phash_image(img), colour_grid(img), thumbnail(img)


def stored_signature(data: bytes, width: int, height: int, original_width: int | None,
                     original_height: int | None, resize_mode: str) -> tuple[int, list[int], bytes]:
    """The signature of an image as download stores it (its padding cut away)."""
    return image_signature(data, content_box(width, height, original_width, original_height, resize_mode))


def stored_signature_or_none(data: bytes, width: int, height: int, original_width: int | None,
                             original_height: int | None, resize_mode: str) -> tuple[int | None, list[int] | None, bytes | None]:
    """``stored_signature``, or (None, None, None) for an image the hash cannot read: the sample is still
    good, select just cannot compare it (it counts such rows as ``unhashed``)."""
    try:
        return stored_signature(data, width, height, original_width, original_height, resize_mode)
    except Exception:
        return None, None, None


# --- hashes as numbers and text -------------------------------------------------------------------


def to_hex(h: int) -> str:
    """The 16-hex form of a signed int64 hash (imagehash's ``str``)."""
    return f"{h & MASK64:016x}"


def from_hex(s: str) -> int:
    """A 16-hex hash (optionally 0x-prefixed) → signed int64; ValueError on anything else."""
    t = s.strip().lower().removeprefix("0x")
    if len(t) != HASH_BITS // 4 or any(c not in "0123456789abcdef" for c in t):
        raise ValueError(f"not a 64-bit hex hash: {s!r}")
    v = int(t, 16)
    return v - (1 << HASH_BITS) if v >> (HASH_BITS - 1) else v


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & MASK64).bit_count()


def popcount64(x: np.ndarray) -> np.ndarray:
    """Bits set per element of an int64/uint64 array."""
    return np.bitwise_count(np.ascontiguousarray(x).view(np.uint64)).astype(np.int64)


# --- bands ----------------------------------------------------------------------------------------


def band_layout(bands: int) -> list[tuple[int, int]]:
    """(shift, width) of each band: the 64 bits cut into ``bands`` runs as equal as can be."""
    if not 1 <= bands <= HASH_BITS:
        raise ValueError(f"bands must be 1..{HASH_BITS}, got {bands}")
    base, extra = divmod(HASH_BITS, bands)
    out, lo = [], 0
    for i in range(bands):
        width = base + (i < extra)
        out.append((lo, width))
        lo += width
    return out


def expected_candidates(n: int, bands: int) -> float:
    """Candidate pairs per hash for ``n`` uniformly random hashes (each band: n / 2^width)."""
    return sum(n / 2.0**w for _, w in band_layout(bands))


def choose_bands(n: int, distance: int, budget: float = CANDIDATES_PER_HASH) -> int:
    """``distance + 1`` bands (exhaustive by pigeonhole) when ``n`` hashes afford it, else the
    most bands whose expected candidates per hash stay within ``budget`` (at least 2)."""
    best = min(distance + 1, HASH_BITS)
    while best > 2 and expected_candidates(n, best) > budget:
        best -= 1
    return best


def band_values_np(h: np.ndarray, bands: int) -> list[np.ndarray]:
    """Each band's value per hash (numpy, for the in-process search and the benchmark)."""
    u = np.ascontiguousarray(h).view(np.uint64)
    return [(u >> np.uint64(s)) & np.uint64((1 << w) - 1) for s, w in band_layout(bands)]


# --- Spark ----------------------------------------------------------------------------------------


def _band_value(col, shift: int, width: int):
    from pyspark.sql import functions as F

    if width >= HASH_BITS:
        return col
    return F.shiftrightunsigned(col, shift).bitwiseAND(F.lit((1 << width) - 1))


def _with_bands(df, bands: int, prefix: str):
    """``df`` (``{prefix}phash`` …) with one row per band: ``band``, ``band_value``."""
    from pyspark.sql import functions as F

    h = F.col(f"{prefix}phash")
    per_band = [F.struct(F.lit(i).alias("band"), _band_value(h, s, w).alias("band_value"))
                for i, (s, w) in enumerate(band_layout(bands))]
    return df.withColumn("_b", F.explode(F.array(*per_band))).select("*", "_b.band", "_b.band_value").drop("_b")


def _first_shared_band(xor, bands: int):
    """The index of the first band on which two hashes agree (their xor is 0 there)."""
    from pyspark.sql import functions as F

    expr = None
    for i, (s, w) in reversed(list(enumerate(band_layout(bands)))):
        expr = F.when(_band_value(xor, s, w) == 0, F.lit(i)) if expr is None else \
            F.when(_band_value(xor, s, w) == 0, F.lit(i)).otherwise(expr)
    return expr


def colours_agree(a, b, tolerance: int | None):
    """True when two colour grids differ by at most ``tolerance`` in every value, or either is
    unknown, or the tolerance is None (off)."""
    from pyspark.sql import functions as F

    if tolerance is None:
        return F.lit(True)
    worst = F.array_max(F.zip_with(a, b, lambda p, q: F.abs(p - q)))
    return a.isNull() | b.isNull() | (worst <= tolerance)


def match_pairs(left, right, distance: int, bands: int, colour_tolerance: int | None, *, same: bool = False):
    """(left_id, right_id, dist) for every left × right pair of signatures that share a band,
    are within ``distance`` bits and whose colours agree. ``left``/``right``: DataFrames of
    (id, phash, colour_grid). ``same``: right is left; each unordered pair once (left_id < right_id)."""
    from pyspark.sql import functions as F

    def side(df, p):
        cols = [F.col("id").alias(f"{p}id"), F.col("phash").alias(f"{p}phash"), F.col("colour_grid").alias(f"{p}colour")]
        return _with_bands(df.where(F.col("phash").isNotNull()).select(*cols), bands, p)

    lt, rt = side(left, "l_"), side(right, "r_")
    cond = [lt.band == rt.band, lt.band_value == rt.band_value]
    if same:
        cond.append(lt.l_id < rt.r_id)
    xor = F.col("l_phash").bitwiseXOR(F.col("r_phash"))
    return (
        lt.join(rt, cond)
        .where(F.bit_count(xor) <= distance)
        .where(_first_shared_band(xor, bands) == lt.band)  # each pair once, in the first band it shares
        .where(colours_agree(F.col("l_colour"), F.col("r_colour"), colour_tolerance))
        .select(F.col("l_id").alias("left_id"), F.col("r_id").alias("right_id"), F.bit_count(xor).alias("dist"))
    )


def propagate_min_label(edges, labels, max_rounds: int = 1000):
    """(id, label) for every node in ``edges`` (a, b): the smallest label in its connected
    component, by min-label propagation (one round per hop of the longest shortest path);
    ``labels``: (id, label) for at least those nodes. Returns (DataFrame, rounds)."""
    from pyspark.sql import functions as F

    nodes = edges.select(F.col("a").alias("id")).union(edges.select(F.col("b").alias("id"))).distinct()
    lab = labels.join(nodes, "id").localCheckpoint()
    for rounds in range(1, max_rounds + 1):
        to_b = edges.join(lab.withColumnRenamed("id", "a"), "a").select(F.col("b").alias("id"), "label")
        to_a = edges.join(lab.withColumnRenamed("id", "b"), "b").select(F.col("a").alias("id"), "label")
        new = lab.unionByName(to_b).unionByName(to_a).groupBy("id").agg(F.min("label").alias("label")).localCheckpoint()
        changed = new.join(lab.withColumnRenamed("label", "old"), "id").where(F.col("label") != F.col("old")).count()
        lab = new
        if not changed:
            return lab, rounds
    raise RuntimeError(f"near-duplicate clusters did not settle in {max_rounds} rounds")


# Candidate keys: pHashes of parts of the copy thumbnail, which crops and overlays change less than
# the whole picture's. INNER: the middle 60 % (border overlays left out). ZOOM: 7.5 % off each
# side, what a 5–10 % crop keeps, so a cropped copy's whole pHash meets its original's zoomed one.
# COLOUR: the pHash of each pixel's colour distance from the picture's mean colour. pHash reads
# luminance only, so a picture whose colours share a luminance (purple on red) has a flat, noisy pHash
# (a copy's was 16 bits off); the colour distance still shows its objects. Flat pictures meet on it
# easily, so it proposes only within COLOUR_KEY_DISTANCE bits (bench/near_dup.py, README "Near-duplicates").
INNER_MARGIN, ZOOM_MARGIN = 0.2, 0.075
COLOUR_KEY_DISTANCE = 6
N_KEYS = 4  # whole picture, inner, zoomed, colour
KEY_PAIRS = [(0, 0), (1, 1), (0, 2), (3, 3)]  # the keys compared: whole–whole, inner–inner, whole–zoomed (both ways), colour
KEY_PAIR_CAP = {(3, 3): COLOUR_KEY_DISTANCE}  # a pair of keys compared within less than the configured distance


def _margin_phash(img, margin: float) -> int:
    """The pHash of a square image without ``margin`` of its side off each side."""
    from PIL import Image

    s = img.size[0]
    lo, hi = s * margin, s * (1 - margin)
    return phash_image(img.resize((s, s), Image.Resampling.BILINEAR, box=(lo, lo, hi, hi)))


def _colour_phash(img) -> int:
    """The pHash of each pixel's distance from the mean colour (stretched to 0–255)."""
    from PIL import Image

    a = np.asarray(img, dtype=np.float32)
    d = np.sqrt(((a - a.reshape(-1, 3).mean(axis=0)) ** 2).sum(axis=-1))
    d *= 255.0 / max(float(d.max()), 1e-6)
    return phash_image(Image.fromarray(d.astype(np.uint8)))


def candidate_keys(phash: int | None, thumb: bytes | None) -> list[int | None]:
    """[whole, inner, zoomed, colour] pHashes of an image: ``phash`` and the three taken from its copy
    thumbnail (None when it has none or it does not decode). bench/near_dup.py measured the
    candidate recall each adds."""
    from pipeline.copy_detect import thumbnail_image

    try:
        img = thumbnail_image(thumb) if thumb is not None else None
    except ValueError:
        img = None
    if img is None:
        return [phash] + [None] * (N_KEYS - 1)
    return [phash, _margin_phash(img, INNER_MARGIN), _margin_phash(img, ZOOM_MARGIN), _colour_phash(img)]


def key_distances(keys_a: list[int | None], keys_b: list[int | None]) -> list[int]:
    """Per pair of KEY_PAIRS, the bits two images' candidate keys differ in (the smaller of both
    orders); 64 where a key is missing or past the pair's own cap (KEY_PAIR_CAP): never a candidate."""
    out = []
    for x, y in KEY_PAIRS:
        d = min((hamming(keys_a[p], keys_b[q]) for p, q in ((x, y), (y, x))
                 if keys_a[p] is not None and keys_b[q] is not None), default=64)
        out.append(d if d <= KEY_PAIR_CAP.get((x, y), 64) else 64)
    return out


def candidate_pairs(left, right, distance: int, bands: int, colour_tolerance: int | None, *, same: bool = False):
    """(left_id, right_id) of the pairs ``match_pairs`` finds on any pair of keys in KEY_PAIRS
    (``candidate_keys``, computed from ``phash`` and ``copy_thumb`` in the workers): what copy
    detection then confirms. A cross pair of keys (whole picture against zoomed) is joined both
    ways (in a self-join, one join finds both orders)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    extra = F.udf(lambda p, t: candidate_keys(p, t)[1:], T.ArrayType(T.LongType()))

    def keyed(df):  # the keys computed once, without the thumbnails
        return (df.select("id", "colour_grid", F.col("phash").alias("_k0"), extra("phash", "copy_thumb").alias("_ks"))
                .select("id", "colour_grid", "_k0", *[F.col("_ks")[i].alias(f"_k{i + 1}") for i in range(N_KEYS - 1)])
                .localCheckpoint())

    lk = keyed(left)
    rk = lk if same else keyed(right)
    parts = []
    for x, y in KEY_PAIRS:
        for a, b in ((x, y),) if x == y or same else ((x, y), (y, x)):
            m = match_pairs(lk.withColumnRenamed(f"_k{a}", "phash"), rk.withColumnRenamed(f"_k{b}", "phash"),
                            min(distance, KEY_PAIR_CAP.get((x, y), distance)), bands, colour_tolerance, same=same and a == b)
            if same and a != b:  # both orders of a cross pair: as (smaller, larger) id, never an image with itself
                m = m.where(F.col("left_id") != F.col("right_id")).select(
                    F.least("left_id", "right_id").alias("left_id"), F.greatest("left_id", "right_id").alias("right_id"))
            parts.append(m.select("left_id", "right_id"))
    out = parts[0]
    for m in parts[1:]:
        out = out.union(m)
    return out.distinct()


def confirm_pairs(pairs, left_thumbs, right_thumbs, thresholds: CopyThresholds):
    """(the candidate ``pairs`` (left_id, right_id, …) that copy detection confirms, how many could not be
    compared): a pair is confirmed when the two images' thumbnails (DataFrames (id, copy_thumb)) line up
    under some crop (pipeline/copy_detect.py); a pair missing a thumbnail, or with one unreadable, is not
    confirmed and is counted. Runs in the Python workers, one pair at a time, once (checkpointed)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from pipeline.copy_detect import copy_verdict

    check = F.udf(lambda a, b: copy_verdict(a, b, thresholds), T.BooleanType())
    lt = left_thumbs.select(F.col("id").alias("left_id"), F.col("copy_thumb").alias("_lt"))
    rt = right_thumbs.select(F.col("id").alias("right_id"), F.col("copy_thumb").alias("_rt"))
    judged = (pairs.join(lt, "left_id", "left").join(rt, "right_id", "left")
              .withColumn("_copy", check("_lt", "_rt")).drop("_lt", "_rt").localCheckpoint())
    return judged.where(F.col("_copy")).drop("_copy"), judged.where(F.col("_copy").isNull()).count()


def warn_unconfirmable(n: int, what: str) -> None:
    """Say that ``n`` candidate pairs of ``what`` could not be compared (kept as distinct pictures)."""
    from pipeline import log

    if n:
        log.warn(f"select: {n} {what} candidate pair(s) could not be compared by copy detection (a copy "
                 "thumbnail missing or unreadable: shards downloaded before thumbnails were kept?) and count as "
                 "distinct pictures; download again, or set select.copy_confirm=false to match on hashes alone")


# --- reference sets: evaluation images and blocklists ----------------------------------------------


def reference_items(path: str) -> list[tuple[str, str]]:
    """(kind, file) for every image ("image") and webdataset shard ("tar") at ``path``: a folder
    (searched recursively), one image or one .tar. UserError when there is none."""
    from pipeline import storage

    fs, p = storage.fs_for(path)
    if not fs.exists(p):
        raise UserError(f"select.decontaminate: {path} does not exist")
    proto = path.split("://", 1)[0] + "://" if "://" in path else ""
    files = [p] if fs.isfile(p) else sorted(fs.find(p))
    items = []
    for f in files:
        name = f.lower()
        full = proto + f if proto and not f.startswith(proto) else f
        if name.endswith(".tar"):
            items.append(("tar", full))
        elif name.endswith(IMAGE_SUFFIXES):
            items.append(("image", full))
    if not items:
        raise UserError(f"select.decontaminate: no images ({', '.join(IMAGE_SUFFIXES)}) or .tar shards in {path}")
    return items


def _signature_or_none(data: bytes) -> tuple[int | None, list[int] | None, bytes | None]:
    try:
        return image_signature(data)
    except Exception:  # an unreadable evaluation image is counted, not fatal
        return None, None, None


def hash_reference_item(item: tuple[str, str, str]) -> Iterator[tuple]:
    """Spark: (set, source, phash, colour_grid, copy_thumb) for one image file or every image of one shard;
    phash None for an image that does not decode."""
    from pipeline import storage
    from pipeline.shards import iter_tar

    name, kind, path = item
    fs, p = storage.fs_for(path)
    with fs.open(p, "rb") as f:
        if kind == "image":
            yield (name, path, *_signature_or_none(f.read()))
            return
        for _, key, sample in iter_tar(f):
            ext = next((e for e in sample if f".{e}" in IMAGE_SUFFIXES), None)
            if ext is not None:
                yield (name, f"{path}#{key}", *_signature_or_none(sample[ext]))


def reference_signatures(spark, paths: list[str]):
    """DataFrame (set, source, phash, colour_grid, copy_thumb) of every image under each of ``paths`` (the set
    is the path as given), hashed in the executors."""
    from pyspark.sql import types as T

    items = [(path, kind, f) for path in paths for kind, f in reference_items(path)]
    schema = T.StructType([
        T.StructField("set", T.StringType(), False), T.StructField("source", T.StringType(), False),
        T.StructField("phash", T.LongType(), True), T.StructField("colour_grid", T.ArrayType(T.ShortType()), True),
        T.StructField("copy_thumb", T.BinaryType(), True),
    ])
    slices = max(1, min(len(items), spark.sparkContext.defaultParallelism * 4))
    rdd = spark.sparkContext.parallelize(items, slices).flatMap(hash_reference_item)
    return spark.createDataFrame(rdd, schema)


def read_blocklist(path: str) -> tuple[list[int], list[str]]:
    """The hashes of a blocklist file, one per line (the first field; blank lines and ``#`` comments
    skipped): 16 hex digits = a pHash (perceptual: near copies match too), 64 = a sha256 of the
    image's bytes (exact). Returns (phashes, sha256s); UserError naming the file and line on anything else."""
    from pipeline import storage

    if not storage.exists(path):
        raise UserError(f"select.blocklist_hashes: {path} does not exist")
    fs, p = storage.fs_for(path)
    phashes, sha256s = [], []
    with fs.open(p, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            field = line.split("#", 1)[0].split()
            if not field:
                continue
            digest = field[0].lower().removeprefix("0x")
            if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
                sha256s.append(digest)
                continue
            try:
                phashes.append(from_hex(field[0]))
            except ValueError:
                raise UserError(f"select.blocklist_hashes: {path} line {n}: {field[0]!r} is neither a 16-hex pHash "
                                "nor a 64-hex sha256") from None
    return phashes, sha256s
