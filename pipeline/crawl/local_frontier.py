"""The next frontier computed on the driver with pyarrow, for a round small enough to hold
(``crawl.driver_frontier_max_urls``): the rules of the Spark job (``Rounds.next_frontier``) exactly,
without a Spark job's fixed cost. That cost (nine jobs: shuffles, a window, three writes) is two to
three seconds whatever the round's size, most of a small round and of a small crawl. Same inputs give
the same frontier, the same rejected URLs with the same reasons and the same host groups (Spark's
``xxhash64``, reproduced by ``spark_xxhash64``): tests/test_crawl.py runs both and compares them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from pipeline.crawl.layout import REJECTED
from pipeline.crawl.scope import Scope, host_of, normalise


def spark_xxhash64(text: str) -> int:
    """Spark SQL's ``xxhash64`` of a string: XXH64 of its UTF-8 bytes with seed 42, as a signed long."""
    h = xxhash.xxh64_intdigest(text.encode("utf-8"), seed=42)
    return h - (1 << 64) if h >= 1 << 63 else h


def host_group(host: str, groups: int) -> int:
    """A host's fetch group, ``pmod(xxhash64(host), groups)`` as the frontier's Spark writer computes it."""
    return spark_xxhash64(host) % groups  # Python's % of a positive modulus is Spark's pmod


def link_rows(links: Iterable, depths: Iterable[int], strip_params: tuple[str, ...],
              scope: Scope) -> Iterator[tuple[str, str, int, bool]]:
    """(url, host, depth, in_scope) of each link that normalises to a web page (both frontier paths)."""
    for link, depth in zip(links, depths):
        url = normalise(link, strip_params) if isinstance(link, str) else None
        if url is not None:
            yield url, host_of(url), int(depth), url in scope


def links_with_depth(pages: pa.Table) -> tuple[list, list]:
    """Every link of the pages with the depth it is queued at: a page's depth + 1, or its own for a
    redirect's target (a redirect is the same page under another URL)."""
    redirected = pc.fill_null(pc.equal(pages["reason"], "redirected"), False)
    depth = pc.if_else(redirected, pages["depth"], pc.add(pages["depth"], 1))
    links = pages["links"].combine_chunks()
    return pc.list_flatten(links).to_pylist(), pc.take(depth, pc.list_parent_indices(links)).to_pylist()


QUEUED = pa.schema([("url", pa.string()), ("depth", pa.int32()), ("host", pa.string())])


def next_frontier(pages: pa.Table, seen: pa.Array, before: pa.Table, cc, scope: Scope,
                  remaining: int) -> tuple[pa.Table, pa.Table]:
    """(queued: url, depth, host; rejected: url, depth, reason) from a round's ``pages`` (depth,
    reason, links), the URLs ``seen`` (queued or rejected in any round so far) and each host's URLs
    queued so far (``before``: host, before). The rules, in the Spark job's order: new URLs only, each
    at its least depth; out_of_scope, then max_depth, then the per-host budget (a host's earlier URLs
    count, then its new ones by depth and URL), then the total budget (``remaining``, kept in
    xxhash64(url) order)."""
    links, depths = links_with_depth(pages)
    rows = list(link_rows(links, depths, tuple(cc.strip_params), scope))
    if not rows:
        return QUEUED.empty_table(), REJECTED.empty_table()
    url, host, depth, in_scope = (list(c) for c in zip(*rows))
    found = pa.table({"url": url, "depth": pa.array(depth, pa.int32()), "host": host, "in_scope": in_scope})
    g = found.group_by("url", use_threads=False).aggregate(
        [("depth", "min"), ("host", "first"), ("in_scope", "first")])
    new = pa.table({"url": g["url"], "depth": g["depth_min"], "host": g["host_first"], "in_scope": g["in_scope_first"]})
    new = new.join(pa.table({"url": pa.array(seen, pa.string())}), "url", join_type="left anti")
    new = new.join(before, "host", join_type="left outer")
    in_bounds = pc.and_(new["in_scope"], pc.less_equal(new["depth"], cc.max_depth))
    new = new.append_column("in_bounds", in_bounds).sort_by(
        [("host", "ascending"), ("in_bounds", "ascending"), ("depth", "ascending"), ("url", "ascending")])
    n = len(new)
    hosts, bounds = new["host"].to_numpy(zero_copy_only=False), new["in_bounds"].to_numpy(zero_copy_only=False)
    starts = np.ones(n, dtype=bool)
    starts[1:] = (hosts[1:] != hosts[:-1]) | (bounds[1:] != bounds[:-1])
    index = np.arange(n)
    rank = index - np.maximum.accumulate(np.where(starts, index, 0)) + 1  # row_number() over (host, in_bounds)
    count = pc.fill_null(new["before"], 0).to_numpy() + rank
    scoped, deep = new["in_scope"].to_numpy(zero_copy_only=False), new["depth"].to_numpy() > cc.max_depth
    reason = np.where(~scoped, "out_of_scope", np.where(deep, "max_depth", np.where(
        count > cc.max_pages_per_host, "budget_exhausted", "")))
    decided = pa.table({"url": new["url"], "depth": new["depth"], "host": new["host"],
                        "reason": pa.array([r or None for r in reason.tolist()], pa.string())})
    return _total_budget(decided, max(remaining, 0))


def _total_budget(decided: pa.Table, remaining: int) -> tuple[pa.Table, pa.Table]:
    """Split the decisions into queued and rejected, the queued cut to ``remaining`` in (xxhash64(url),
    url) order, the URLs cut rejected as budget_exhausted."""
    queued = decided.filter(pc.is_null(decided["reason"])).select(["url", "depth", "host"])
    rejected = decided.filter(pc.is_valid(decided["reason"])).select(["url", "depth", "reason"])
    if len(queued) > remaining:
        urls = queued["url"].to_pylist()
        order = sorted(range(len(urls)), key=lambda i: (spark_xxhash64(urls[i]), urls[i]))
        cut = queued.take(pa.array(order[remaining:], pa.int64()))
        queued = queued.take(pa.array(sorted(order[:remaining]), pa.int64()))
        rejected = pa.concat_tables([rejected, pa.table({
            "url": cut["url"], "depth": cut["depth"], "reason": pa.array(["budget_exhausted"] * len(cut), pa.string())})])
    return queued, rejected


def by_group(queued: pa.Table, groups: int) -> Iterator[tuple[int, pa.Table]]:
    """(group, its rows sorted by URL) for each host group with rows, in group order: the frontier's
    layout (one file per group), as the Spark writer makes it."""
    group_of = {h: host_group(h, groups) for h in pc.unique(queued["host"]).to_pylist()}
    grouped = queued.append_column("group", pa.array([group_of[h] for h in queued["host"].to_pylist()], pa.int32()))
    grouped = grouped.sort_by([("group", "ascending"), ("url", "ascending")])
    for g in sorted(set(group_of.values())):
        yield g, grouped.filter(pc.equal(grouped["group"], g))
