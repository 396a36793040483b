"""Copy confirmation: is one image a copy (resized, re-encoded, cropped, overlaid) of another, or
only a look-alike (another picture on the same background, with the same object or layout)?

A perceptual hash cannot tell: on a flat background a picture's hash is mostly its background, so
a small object moved, recoloured or swapped leaves the hash within a few bits (DESIGN "Copy
detection"). The hash only proposes candidate pairs (pipeline/near_dup.py); this module confirms
them by *registration*: each image keeps a small colour thumbnail (``thumbnail``, SIDE×SIDE RGB,
box-averaged so any resize of the picture gives nearly the same thumbnail, stored as a JPEG at
quality 95 with full colour resolution: ~4 KB a photo); the crop of one (up to ``MAX_CROP`` off each side, 1 %
steps) that best lines it up with the other is found one axis at a time on the mean-colour
profiles, and the aligned pair gets three scores:
- ``residual``: the mean colour difference of the best ``1 - TRIM`` of the pixels (the rest may be
  an overlay): a look-alike on another background, or a different scene, is far off;
- ``peak``: the largest 3×3-averaged local difference, each pixel compared with the closest of the
  other image moved by up to half a pixel; near the border (where watermarks, caption bars and
  logos go) only what a blend toward white or black does not explain counts: an object moved,
  swapped or recoloured shows here;
- ``corr``: the correlation of the pixels the residual counts (two textures are not correlated).
A pair is a copy when corr is at least MIN_CORRELATION, residual within select.copy_max_residual and
peak within what the residual allows (``CopyThresholds``: select.copy_peak_floor + copy_peak_per_residual
× residual, at most copy_max_peak; measured on planted copies and look-alikes: bench/near_dup.py, README
"Near-duplicates"). The crop searched must give the other picture's aspect ratio (kept in the
thumbnail's JPEG comment): a crop that stretches one object into another's outline is no copy. Cost: a few ms a pair on one core
(bench/near_dup.py), paid only by the hash's candidates.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

SIDE = 64  # thumbnail side (pixels)
# Stored as a JPEG at quality 95, 4:4:4 (full colour resolution): ~4 KB a photo (coco_mini mean 4,167, p90 5,217),
# encoded in well under a millisecond in the download's fetch threads. Measured (README "Near-duplicates"): a WebP at
# quality 75 is 1.1 KB but takes 2–5 ms to encode (more than the rest of a small image's download work together) and
# its noise costs the 1,200-pair web's eval_overlap precision (0.92) and 5% crops (0.93); JPEG q90 (3 KB) loses
# near-duplicate recall there (0.944); q95 gives 1.00 / 0.96 and 0.96 / 1.00, and 0.96 of coco_mini's 5% crops.
THUMB_FORMAT, THUMB_OPTIONS = "JPEG", {"quality": 95, "subsampling": 0}
RAW_BYTES = SIDE * SIDE * 3  # the raw RGB form (shards written before thumbnails were compressed) is read too
MAX_CROP = 0.12  # the largest crop (fraction off one side) a copy may have
TRIM = 0.10  # the share of worst-matching pixels ignored (an overlay may cover them)
MIN_CORRELATION = 0.6  # the aligned pixels (those the residual counts) of a copy correlate; two textures do not
ASPECT_TAG = "aspect="  # the thumbnail's JPEG comment: "aspect=<width / height of the picture>"
# A copy's crop of the original has the copy's aspect ratio (a resize keeps it): |log| of the mismatch at most this
# (the crop search's 1 % steps and the pixel rounding of small pictures stay well inside; a stretched copy does not).
ASPECT_TOLERANCE = 0.04


def thumbnail(img) -> bytes:
    """The SIDE×SIDE RGB thumbnail of a PIL RGB image (box-averaged), as JPEG bytes whose comment keeps
    the picture's aspect ratio (the thumbnail squares it): a copy's crop must give the other's shape."""
    from PIL import Image

    buf = io.BytesIO()
    aspect = f"{ASPECT_TAG}{img.size[0] / img.size[1]:.4f}".encode()
    img.resize((SIDE, SIDE), Image.Resampling.BOX).save(buf, THUMB_FORMAT, comment=aspect, **THUMB_OPTIONS)
    return buf.getvalue()


def _aspect_of(comment) -> float | None:
    """The aspect ratio a thumbnail's JPEG comment keeps, or None when it keeps none (a thumbnail
    written before the aspect was kept): then any crop may line it up."""
    if not isinstance(comment, bytes) or not comment.startswith(ASPECT_TAG.encode()):
        return None
    try:
        aspect = float(comment[len(ASPECT_TAG):])
    except ValueError:
        return None
    return aspect if aspect > 0 and np.isfinite(aspect) else None


def read_thumbnail(thumb: bytes):
    """(PIL RGB image, aspect ratio or None) of a thumbnail; ValueError when the bytes are not one."""
    from PIL import Image, UnidentifiedImageError

    if len(thumb) == RAW_BYTES and not thumb.startswith((b"RIFF", b"\xff\xd8\xff")):
        return Image.frombytes("RGB", (SIDE, SIDE), thumb), None
    try:
        with Image.open(io.BytesIO(thumb)) as im:
            img, aspect = im.convert("RGB"), _aspect_of(im.info.get("comment", b""))
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"not a copy thumbnail ({len(thumb)} bytes): {e}") from None
    if img.size != (SIDE, SIDE):
        raise ValueError(f"a copy thumbnail is {SIDE}×{SIDE}, got {img.size[0]}×{img.size[1]}")
    return img, aspect


def thumbnail_image(thumb: bytes):
    """The PIL RGB image of a thumbnail; ValueError when the bytes are not one."""
    return read_thumbnail(thumb)[0]


def _resample_matrix(spans: np.ndarray) -> np.ndarray:
    """(H, SIDE, SIDE) bilinear weights: matrix h samples the span [lo, 1 - hi] (``spans[h]``) of an
    axis at SIDE evenly spaced pixel centres."""
    k = (np.arange(SIDE) + 0.5) / SIDE
    lo, hi = spans[:, :1], spans[:, 1:]
    pos = np.clip((lo + (1.0 - lo - hi) * k[None, :]) * SIDE - 0.5, 0.0, SIDE - 1.0)  # (H, SIDE)
    left = np.floor(pos).astype(np.int64)
    frac = (pos - left).astype(np.float32)
    right = np.minimum(left + 1, SIDE - 1)
    w = np.zeros((len(spans), SIDE, SIDE), dtype=np.float32)
    hyp, out = np.indices(pos.shape)
    np.add.at(w, (hyp, out, left), 1.0 - frac)
    np.add.at(w, (hyp, out, right), frac)
    return w


_SPANS = np.array([(lo, hi) for lo in np.arange(0.0, MAX_CROP + 1e-6, 0.01)
                   for hi in np.arange(0.0, MAX_CROP + 1e-6, 0.01)], dtype=np.float32)
_WEIGHTS = _resample_matrix(_SPANS)  # every crop of one axis, 1 % steps: (169, SIDE, SIDE)
_LOG_KEPT = np.log(1.0 - _SPANS.sum(axis=1))  # the log share of the axis each crop keeps
SHIFT = 0.5  # pixels: how far a registered copy may be off (each pixel is compared with the closest of the shifts)
REGION_LEVEL = 20.0  # a pixel differs when its 3×3-averaged difference is over this (0–255)
_MIDDLE = slice(round(SIDE * 0.3), SIDE - round(SIDE * 0.3))
BORDER = SIDE // 16  # pixels: a region of difference within this of the border may be an overlay


def _span_costs(profile_a: np.ndarray, profile_b: np.ndarray) -> np.ndarray:
    """How far each crop of one axis of a (``_SPANS``) is from b on the mean-colour profiles (SIDE, 3)."""
    return np.abs(_WEIGHTS @ profile_a - profile_b).max(axis=-1).mean(axis=-1)


def _best_crops(a: np.ndarray, b: np.ndarray, ratio: float | None, top: int) -> tuple[np.ndarray, np.ndarray]:
    """(x spans, y spans) of the ``top`` crops of a whose profiles best match b's, each axis registered
    on its own; with ``ratio`` (b's aspect / a's) only crops of that shape (a crop keeps a share of
    each axis: their ratio is the aspect's change). Empty when no crop within MAX_CROP has it."""
    cost = _span_costs(a.mean(axis=0), b.mean(axis=0))[:, None] + _span_costs(a.mean(axis=1), b.mean(axis=1))[None, :]
    if ratio is not None:
        cost = np.where(np.abs(_LOG_KEPT[:, None] - _LOG_KEPT[None, :] - np.log(ratio)) <= ASPECT_TOLERANCE, cost, np.inf)
    best = np.argsort(cost, axis=None)[:top]
    best = best[np.isfinite(cost.ravel()[best])]
    return np.unravel_index(best, cost.shape)


def _crop_scores(a: np.ndarray, b: np.ndarray, ratio: float | None = None, top: int = 9) -> tuple[float, float, float]:
    """(trimmed residual, peak, corr) of b against the crop of a that lines them up best: the ``top``
    crops by their profiles (``_best_crops``) are compared pixel by pixel. No crop of the right shape:
    (inf, inf, 0), never a copy."""
    xs, ys = _best_crops(a, b, ratio, top)
    if len(xs) == 0:
        return float("inf"), float("inf"), 0.0
    wx, wy = _WEIGHTS[xs], _WEIGHTS[ys]  # (n, SIDE out, SIDE in)
    r = wy[:, None] @ a.transpose(2, 0, 1)[None] @ wx.transpose(0, 2, 1)[:, None]  # (n, c, rows out, cols out)
    d = np.abs(r - b.transpose(2, 0, 1)).max(axis=1)
    flat = d.reshape(len(xs), -1)
    keep = int(round(flat.shape[1] * (1.0 - TRIM)))
    trimmed = np.partition(flat, keep - 1, axis=-1)[:, :keep].mean(axis=-1)
    best = int(np.argmin(trimmed))
    aligned = r[best]
    inside = flat[best] <= np.partition(flat[best], keep - 1)[keep - 1]  # the pixels the residual counts
    corr = np.corrcoef(aligned.reshape(3, -1)[:, inside].ravel(), b.transpose(2, 0, 1).reshape(3, -1)[:, inside].ravel())[0, 1]
    # A flat pair (no variation to correlate) counts as correlated: residual and peak judge it.
    corr = 1.0 if not np.isfinite(corr) else float(corr)
    return float(trimmed[best]), _peak(aligned, b.transpose(2, 0, 1)), corr


def _moved(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """(c, SIDE, SIDE) ``x`` moved by one pixel (dy, dx), its edge repeated."""
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    return pad[:, 1 + dy:SIDE + 1 + dy, 1 + dx:SIDE + 1 + dx]


def _peak(r: np.ndarray, b: np.ndarray) -> float:
    """The largest local difference of two aligned (c, SIDE, SIDE) images: each pixel of b is
    compared with the closest of r moved by up to half a pixel each way (a registered copy is off by
    less; an object that is not there costs its contrast), averaged over 3×3. Regions of difference
    that touch the border (where a credit line, a caption bar or a logo goes) count only with what
    an overlay cannot explain (``_unexplained``: r blended toward white or black), as far as they
    stay in the outer 30 %."""
    from scipy import ndimage

    rows = [(1 - SHIFT) * r + SHIFT * _moved(r, dy, 0) for dy in (-1, 0, 1)]
    shifts = [(1 - SHIFT) * row + SHIFT * _moved(row, 0, dx) for row in rows for dx in (-1, 0, 1)]
    d = np.min([np.abs(s - b).max(axis=0) for s in shifts], axis=0)
    blur = ndimage.uniform_filter(d, 3, mode="nearest")
    regions, _ = ndimage.label(blur > REGION_LEVEL, structure=np.ones((3, 3)))
    edge = np.unique(np.concatenate([regions[:BORDER].ravel(), regions[-BORDER:].ravel(),
                                     regions[:, :BORDER].ravel(), regions[:, -BORDER:].ravel()]))
    excused = np.isin(regions, edge) & (regions > 0)
    excused[_MIDDLE, _MIDDLE] = False  # an overlay stays in the outer 30 %; deeper, a difference counts
    peak = float(blur[~excused].max(initial=0.0))
    if excused.any():  # what is excused must still look like an overlay
        u = ndimage.uniform_filter(np.min([_unexplained(s, b) for s in shifts], axis=0), 3, mode="nearest")
        peak = max(peak, float(u[excused].max()))
    return peak


def _unexplained(r: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pixel, the part of the difference b - r that no blend of r toward white or toward black
    (a translucent or opaque overlay: text, a box, a caption bar) explains."""
    d = b - r
    out = None
    for c in (0.0, 255.0):
        v = c - r
        t = np.clip((d * v).sum(axis=0) / np.maximum((v * v).sum(axis=0), 1.0), 0.0, 1.0)
        u = np.abs(d - t * v).max(axis=0)
        out = u if out is None else np.minimum(out, u)
    return out


def copy_scores(thumb_a: bytes, thumb_b: bytes) -> list[tuple[float, float, float]]:
    """(residual, peak, corr) of b against the best crop of a, and of a against the best crop of b
    (either may be the crop of the other): residual = the trimmed mean colour difference (0
    identical, ~1–10 a re-encoded, cropped or overlaid copy); peak = the largest local difference
    away from the border (a copy's is re-encoding noise, a look-alike's is an object that differs:
    its contrast); corr = the correlation of the pixels the residual counts (two low-contrast
    textures can be close in colour but not correlated)."""
    (img_a, aspect_a), (img_b, aspect_b) = read_thumbnail(thumb_a), read_thumbnail(thumb_b)
    a, b = np.asarray(img_a, dtype=np.float32), np.asarray(img_b, dtype=np.float32)
    ratio = aspect_b / aspect_a if aspect_a and aspect_b else None
    return [_crop_scores(a, b, ratio), _crop_scores(b, a, None if ratio is None else 1.0 / ratio)]


@dataclass(frozen=True)
class CopyThresholds:
    """When a pair's scores make it a copy (select.copy_*): residual at most ``max_residual``; peak at
    most ``peak_floor + peak_per_residual × residual``, never over ``max_peak``. The peak allowed grows
    with the residual: a re-encoded copy differs a little everywhere, so it may differ more in one
    place; two clean pictures that agree everywhere but in one place (an object swapped on a flat
    background) are two pictures."""

    max_residual: float
    max_peak: float
    peak_floor: float
    peak_per_residual: float

    @classmethod
    def of(cls, sel) -> CopyThresholds:
        """The thresholds of a SelectConfig."""
        return cls(sel.copy_max_residual, sel.copy_max_peak, sel.copy_peak_floor, sel.copy_peak_per_residual)

    def allows(self, residual: float, peak: float, corr: float) -> bool:
        allowed_peak = min(self.max_peak, self.peak_floor + self.peak_per_residual * residual)
        return residual <= self.max_residual and peak <= allowed_peak and corr >= MIN_CORRELATION


def copy_verdict(thumb_a: bytes | None, thumb_b: bytes | None, thresholds: CopyThresholds) -> bool | None:
    """Whether the pair is a copy: in one direction, its scores within ``thresholds``. None when it cannot
    be told (a thumbnail missing, e.g. shards downloaded before thumbnails were kept, or unreadable): the
    caller counts those pairs, they are never silently taken for copies or for distinct pictures."""
    if thumb_a is None or thumb_b is None:
        return None
    try:
        scores = copy_scores(thumb_a, thumb_b)
    except ValueError:
        return None
    return any(thresholds.allows(*score) for score in scores)


def is_copy(thumb_a: bytes | None, thumb_b: bytes | None, thresholds: CopyThresholds) -> bool:
    """``copy_verdict`` as a yes/no: a pair that cannot be told is no copy."""
    return bool(copy_verdict(thumb_a, thumb_b, thresholds))
