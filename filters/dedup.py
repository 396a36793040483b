"""Exact dedup of (url, text) pairs: the first occurrence stays, the others drop as "dedup".

Two forms with the same meaning: ``DedupFilter`` for one process (it remembers every uid it saw),
and ``dedup_spark`` for a whole Spark dataset, global across partitions (a window over uid), which
is what ``wit filter`` uses.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from filters.base import Filter, FilterResult
from pipeline.ids import make_uid

NAME = "dedup"
# Which of several equal pairs is "first": a stable order, whatever the partitioning.
ORDER_COLUMNS = ("source_file", "record_id", "page_url")


def _keys(batch: pa.RecordBatch) -> list[str]:
    names = batch.schema.names
    if "uid" in names:
        uids = batch.column("uid").to_pylist()
    else:
        uids = [None] * batch.num_rows
    if any(u is None for u in uids):
        urls, texts = batch.column("url").to_pylist(), batch.column("text").to_pylist()
        uids = [u if u is not None else make_uid(url or "", text or "") for u, url, text in zip(uids, urls, texts)]
    return uids


class DedupFilter(Filter):
    """In-process dedup over every batch this instance sees (keys: uid = hash of url and text)."""

    name = NAME

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def apply(self, batch: pa.RecordBatch) -> FilterResult:
        keep = np.zeros(batch.num_rows, dtype=bool)
        for i, key in enumerate(_keys(batch)):
            if key not in self.seen:
                self.seen.add(key)
                keep[i] = True
        return FilterResult(keep)


def dedup_spark(df, reason_col: str = "drop_reason"):
    """Mark all but the first row per uid among rows not yet dropped with ``reason_col = "dedup"``.

    Global across partitions: a window partitioned by uid; "first" is the smallest
    (source_file, record_id, page_url, url), so reruns pick the same row.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    alive = F.col(reason_col).isNull()
    order = [F.col(c).asc_nulls_last() for c in ORDER_COLUMNS if c in df.columns] + [F.col("url")]
    w = Window.partitionBy(F.col("uid"), alive).orderBy(*order)
    rn = F.row_number().over(w)
    return df.withColumn(reason_col, F.when(alive & (rn > 1), F.lit(NAME)).otherwise(F.col(reason_col)))
