"""The one interface every filter implements (text, URL, image, CLIP score).

A filter looks at a batch (an Arrow RecordBatch) and returns a keep mask plus any columns it
computed (``lang``, ``lang_score`` …). Its ``name`` is the drop reason recorded for the rows it
drops. ``from_config`` builds it from the run config; ``setup`` loads models once per process
(per Spark Python worker), never per batch. Filters are listed by name in filters/registry.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa


@dataclass
class FilterResult:
    keep: np.ndarray  # bool, one per row
    columns: dict[str, pa.Array] = field(default_factory=dict)


class Filter:
    name: str = "filter"

    @classmethod
    def from_config(cls, cfg) -> Filter:
        """The filter with its settings from a run config (pipeline.config.RunConfig)."""
        return cls()

    def setup(self) -> None:
        """Load models or tables; called once per process before the first batch."""

    def apply(self, batch: pa.RecordBatch) -> FilterResult:
        raise NotImplementedError
