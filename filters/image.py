"""Image and CLIP-score rules: the filters ``wit select`` applies to downloaded, scored pairs.

Rows carry the download metadata (``width``/``height``, ``original_width``/``original_height``)
and the score (``clip_score``). Sizes are the original image's, else the stored one's; like
Spark's ``least``/``greatest``, a missing side is ignored when the other is known.

- ``too_small``: the shorter side is under ``select.min_side`` (or unknown); off at 0.
- ``bad_aspect_ratio``: long side / short side over ``select.max_aspect_ratio`` (or a side <= 0).
- ``low_clip_score``: under the cut: ``clip_score >= select.threshold`` is kept, else the global
  top ``select.top_fraction`` (kept: above the pool's (1 - f) quantile, which select computes over
  every scored pair and passes in, so ties at the cut drop together).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from filters.base import Filter, FilterResult


def _floats(arr) -> np.ndarray:
    """An Arrow numeric column as float64, nulls as NaN."""
    return pc.fill_null(pc.cast(arr, pa.float64()), np.nan).to_numpy(zero_copy_only=False)


def image_sides(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    """(short side, long side) per row as float64, NaN where both sides are unknown."""
    w = pc.coalesce(batch.column("original_width"), batch.column("width"))
    h = pc.coalesce(batch.column("original_height"), batch.column("height"))
    return _floats(pc.min_element_wise(w, h)), _floats(pc.max_element_wise(w, h))


class MinSideFilter(Filter):
    name = "too_small"

    def __init__(self, min_side: int = 0):
        self.min_side = min_side

    @classmethod
    def from_config(cls, cfg) -> MinSideFilter:
        return cls(cfg.select.min_side)

    def apply(self, batch: pa.RecordBatch) -> FilterResult:
        if self.min_side <= 0:
            return FilterResult(np.ones(batch.num_rows, dtype=bool))
        short, _ = image_sides(batch)
        return FilterResult(~(np.isnan(short) | (short < self.min_side)))


class AspectRatioFilter(Filter):
    name = "bad_aspect_ratio"

    def __init__(self, max_ratio: float = 3.0):
        self.max_ratio = max_ratio

    @classmethod
    def from_config(cls, cfg) -> AspectRatioFilter:
        return cls(cfg.select.max_aspect_ratio)

    def apply(self, batch: pa.RecordBatch) -> FilterResult:
        short, long_ = image_sides(batch)
        known = ~np.isnan(short)
        ratio = np.divide(long_, short, out=np.full_like(short, np.inf), where=known & (short > 0))
        return FilterResult(~(known & ((short <= 0) | (ratio > self.max_ratio))))


class ClipScoreFilter(Filter):
    """Keep ``clip_score >= cutoff`` (``inclusive``) or ``> cutoff``; no cutoff keeps every row.

    Scores compare as float64, as Spark compares a float column with a double. A row without a
    score is not this rule's to drop (select drops it earlier as ``score_error``)."""

    name = "low_clip_score"

    def __init__(self, cutoff: float | None = None, inclusive: bool = True):
        self.cutoff, self.inclusive = cutoff, inclusive

    @staticmethod
    def pool_quantile(cfg) -> float | None:
        """The quantile of the scored pool the cut sits at (top fraction f: 1 - f), or None when
        the rule needs none (a threshold, or f = 1)."""
        sel = cfg.select
        if sel.threshold is None and sel.top_fraction is not None and sel.top_fraction < 1.0:
            return 1.0 - sel.top_fraction
        return None

    @classmethod
    def from_config(cls, cfg, pool_cut: float | None = None) -> ClipScoreFilter:
        """The threshold rule, or the top-fraction rule at ``pool_cut`` (the pool's score at
        ``pool_quantile``; None when the pool is empty: nothing to cut)."""
        if cfg.select.threshold is not None:
            return cls(float(cfg.select.threshold), inclusive=True)
        if cls.pool_quantile(cfg) is not None and pool_cut is not None:
            return cls(float(pool_cut), inclusive=False)
        return cls(None)

    def apply(self, batch: pa.RecordBatch) -> FilterResult:
        if self.cutoff is None:
            return FilterResult(np.ones(batch.num_rows, dtype=bool))
        scores = _floats(batch.column("clip_score"))
        low = scores < self.cutoff if self.inclusive else scores <= self.cutoff
        return FilterResult(~low)
