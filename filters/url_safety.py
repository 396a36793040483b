"""The caption-chain face of the fetcher's URL safety (``pipeline.fetch.url_safety``): rows whose URL the
fetcher would refuse are dropped before anything is downloaded."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from filters.base import Filter, FilterResult
from pipeline.fetch.url_safety import check_url, host_allowed, is_blocked_ip  # noqa: F401 - the filter's vocabulary
from pipeline.rules import MAX_URL_LENGTH


class UrlSafetyFilter(Filter):
    """Caption-chain filter: drop rows whose ``url`` ``check_url`` refuses (drop reason "url_safety").

    ``allow_hosts`` mirrors download.allow_hosts, so a run on the local sample web keeps its
    127.0.0.1 URLs; ``reasons`` gives the finer reason per row for stats.
    """

    name = "url_safety"

    def __init__(self, max_length: int = MAX_URL_LENGTH, allow_hosts: Iterable[str] = ()):
        self.max_length = max_length
        self.allow_hosts = tuple(allow_hosts)

    @classmethod
    def from_config(cls, cfg) -> UrlSafetyFilter:
        """Build from a RunConfig: filter.max_url_length and download.allow_hosts."""
        return cls(max_length=cfg.filter.max_url_length, allow_hosts=cfg.download.allow_hosts)

    def reasons(self, batch: pa.RecordBatch | pa.Table) -> list[str | None]:
        urls = batch.column(batch.schema.get_field_index("url")).to_pylist()
        return [check_url(u, self.max_length, self.allow_hosts) for u in urls]

    def apply(self, batch: pa.RecordBatch) -> FilterResult:
        return FilterResult(keep=np.array([r is None for r in self.reasons(batch)], dtype=bool))
