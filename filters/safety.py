"""The cut on the zero-shot unsafe-content score: ``wit select`` drops pairs whose ``unsafe_score``
(written by ``wit score``, see pipeline/score.py and README "Score") is over
``select.max_unsafe_score``; drop reason ``unsafe``. No threshold keeps every row.

A row without an ``unsafe_score`` (scored with ``score.safety`` off, or not scorable) is not this
rule's to drop; select refuses the threshold when the scores carry no safety column at all.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from filters.base import Filter, FilterResult
from pipeline.errors import UserError

COLUMN = "unsafe_score"


class UnsafeFilter(Filter):
    """Keep ``unsafe_score <= max_score`` (and rows without a score); None keeps every row."""

    name = "unsafe"

    def __init__(self, max_score: float | None = None):
        if max_score is not None and not 0.0 <= max_score <= 1.0:
            raise UserError(f"select.max_unsafe_score must be within [0, 1], got {max_score}")
        self.max_score = max_score

    @classmethod
    def from_config(cls, cfg) -> UnsafeFilter:
        """From ``select.max_unsafe_score``; a threshold with ``score.safety`` off is a mistake worth an error."""
        max_score = cfg.select.max_unsafe_score
        if max_score is not None and not cfg.score.safety:
            raise UserError("select.max_unsafe_score is set but score.safety is off: the scores carry no unsafe_score")
        return cls(None if max_score is None else float(max_score))

    def apply(self, batch: pa.RecordBatch) -> FilterResult:
        if self.max_score is None:
            return FilterResult(np.ones(batch.num_rows, dtype=bool))
        scores = pc.fill_null(pc.cast(batch.column(COLUMN), pa.float64()), np.nan).to_numpy(zero_copy_only=False)
        return FilterResult(~(scores > self.max_score))  # NaN > x is False: unscored rows stay
