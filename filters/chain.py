"""A chain of filters built from the run config (``filter.chain``), applied in order.

Each filter sees only the rows every earlier filter kept; a dropped row records the name of the
filter that dropped it (``drop_reason``), a kept one has ``drop_reason = None``. Columns filters
compute (``lang``, ``lang_score``) are added for every row the filter saw, kept or dropped.

Inside Spark (``pipeline.filter``), ``tag_batches`` runs under ``mapInArrow``; the chain
and its models are built once per Python worker (``cached_chain``), and ``dedup`` is done by Spark
itself, globally (filters.dedup.dedup_spark).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from filters import registry
from filters.base import Filter
from filters.registry import ALIASES, CAPTION_FILTERS, CHAIN_NAMES
from pipeline.errors import UserError

REASON = "drop_reason"


def expand_names(names: Sequence[str]) -> list[str]:
    """Config names → filter names (``text_rules`` → min_length, max_length, junk); checks them."""
    out: list[str] = []
    for name in names:
        for n in ALIASES.get(name, [name]):
            if n not in CAPTION_FILTERS:
                raise UserError(f"filter.chain: unknown filter {name!r}; known: {', '.join(CHAIN_NAMES)}")
            if n not in out:
                out.append(n)
    return out


def build_filter(name: str, cfg) -> Filter:
    """One caption filter from the run config (``cfg`` is a pipeline.config.RunConfig)."""
    if name not in CAPTION_FILTERS:
        raise UserError(f"unknown filter {name!r}; known: {', '.join(CAPTION_FILTERS)}")
    return registry.build(name, cfg)


class FilterChain:
    def __init__(self, filters: Sequence[Filter]):
        self.filters = list(filters)
        self._ready = False

    @classmethod
    def from_config(cls, cfg, names: Sequence[str] | None = None) -> FilterChain:
        """The chain ``cfg.filter.chain`` (or ``names``), in order."""
        return cls([build_filter(n, cfg) for n in expand_names(cfg.filter.chain if names is None else names)])

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.filters]

    def setup(self) -> None:
        if not self._ready:
            for f in self.filters:
                f.setup()
            self._ready = True

    def tag(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        """The batch plus computed columns and ``drop_reason``.

        Rows that arrive with a ``drop_reason`` already set are passed through untouched, so
        chains can be run in segments (Spark's global dedup sits between two segments).
        """
        self.setup()
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        n = table.num_rows
        reasons = table.column(REASON).to_pylist() if REASON in table.column_names else [None] * n
        reason = np.array(reasons, dtype=object)
        alive = np.array([r is None for r in reasons], dtype=bool)
        computed: dict[str, tuple[pa.DataType, list]] = {}
        for f in self.filters:
            idx = np.flatnonzero(alive)
            if not len(idx):
                break
            sub = table.take(pa.array(idx)).combine_chunks()
            res = f.apply(sub.to_batches()[0] if sub.num_rows else pa.RecordBatch.from_pylist([], schema=sub.schema))
            keep = np.asarray(res.keep, dtype=bool)
            if keep.shape != (len(idx),):
                raise RuntimeError(f"filter {f.name} returned {keep.shape} keep flags for {len(idx)} rows")
            for col, arr in res.columns.items():
                if col not in computed:
                    old = table.column(col).to_pylist() if col in table.column_names else [None] * n
                    computed[col] = (arr.type, old)
                values = computed[col][1]
                for i, v in zip(idx, arr.to_pylist()):
                    values[i] = v
            dropped = idx[~keep]
            reason[dropped] = f.name
            alive[dropped] = False
        for col, (typ, values) in computed.items():
            arr = pa.array(values, typ)
            if col in table.column_names:
                table = table.set_column(table.column_names.index(col), col, arr)
            else:
                table = table.append_column(col, arr)
        arr = pa.array(list(reason), pa.string())
        if REASON in table.column_names:
            return table.set_column(table.column_names.index(REASON), REASON, arr)
        return table.append_column(REASON, arr)

    def apply(self, batch: pa.RecordBatch | pa.Table) -> tuple[pa.Table, pa.Table]:
        """(kept rows without drop_reason, dropped rows with it)."""
        tagged = self.tag(batch)
        mask = tagged.column(REASON).is_null()
        kept = tagged.filter(mask).drop_columns([REASON])
        return kept, tagged.filter(pc.invert(mask))


# --- inside Spark: one chain per Python worker ---------------------------------------------------
_CHAINS: dict[str, FilterChain] = {}


def cached_chain(cfg_json: str, names: Sequence[str], load_config: Callable[[str], Any]) -> FilterChain:
    """The chain for (config, names), built once per process (models load once per worker).
    ``load_config``: the run config from its JSON (the caller's: filters/ does not import the config)."""
    key = json.dumps([cfg_json, list(names)])
    chain = _CHAINS.get(key)
    if chain is None:
        cfg = load_config(cfg_json)
        chain = FilterChain.from_config(cfg, names)
        chain.setup()
        _CHAINS[key] = chain
    return chain


def tag_batches(batches: Iterable[pa.RecordBatch], cfg_json: str, names: Sequence[str], schema: pa.Schema,
                load_config: Callable[[str], Any]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: tag every batch, conform it to ``schema`` (the tagged-row schema)."""
    yield from tag_with(cached_chain(cfg_json, names, load_config), batches, schema)


def tag_with(chain: FilterChain, batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """mapInArrow body for a chain built by the caller: tag every batch, conform it to ``schema``."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        tagged = chain.tag(batch)
        cols = [tagged.column(f.name).cast(f.type) if f.name in tagged.column_names else pa.nulls(tagged.num_rows, f.type) for f in schema]
        yield from pa.Table.from_arrays(cols, schema=schema).to_batches()
