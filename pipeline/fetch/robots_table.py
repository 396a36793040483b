"""One robots.txt (and tdmrep.json) request per origin per job, on a cluster: the robots table.

A Spark step before the download (and before every crawl round) gathers the distinct origins of the
job's URLs, keeps the records of ``<output_dir>/robots/`` that are still fresh (``expires_at``: the
24 h of ``robots.max_age_s``, or ``robots.unavailable_s``/Retry-After for an unavailable one), and fetches
the others once each: origins are spread over Spark tasks by host, each task asks its origins through
its fetcher's host scheduler (per-host pace, breaker) and returns their ``OriginRecord``. The table is
rewritten whole (a new file, then the old ones removed) with every fresh record, and broadcast: each
download task or crawl fetch task preloads it into its ``RobotsCache``, so no task asks again, and a
rerun while the records are fresh asks nothing. An origin reached only by a redirect is not in the
table and is asked by the task that meets it (once per task).

Columns: origin, status (ok | allow_all | unavailable), fetched_at, expires_at (epoch seconds), detail,
robots (the body read, at most 500 KiB), tdmrep (the tdmrep.json body, when answered 2xx).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import log, storage
from pipeline.fetch.robots import OriginRecord, origin_of

TABLE_DIR = "robots"
SCHEMA = pa.schema([("origin", pa.string()), ("status", pa.string()), ("fetched_at", pa.float64()),
                    ("expires_at", pa.float64()), ("detail", pa.string()), ("robots", pa.binary()),
                    ("tdmrep", pa.binary())])


def read_table(folder: str, now: float | None = None) -> dict[str, OriginRecord]:
    """The fresh records of a robots table folder, by origin (empty when there is none)."""
    now = time.time() if now is None else now
    out: dict[str, OriginRecord] = {}
    if not storage.exists(folder):
        return out
    fs, p = storage.fs_for(folder)
    for path in sorted(fs.glob(p.rstrip("/") + "/*.parquet")):
        with fs.open(path, "rb") as fh:
            for row in pq.read_table(fh).to_pylist():
                if row["expires_at"] > now:
                    out[row["origin"]] = OriginRecord(**row)
    return out


def write_table(folder: str, records: Iterable[OriginRecord]) -> None:
    """Replace the table with ``records``: a new file first, then the older ones removed."""
    fs, p = storage.fs_for(folder)
    fs.makedirs(p, exist_ok=True)
    old = fs.glob(p.rstrip("/") + "/*.parquet")
    name = f"{p.rstrip('/')}/robots-{int(time.time())}-{uuid.uuid4().hex[:8]}.parquet"
    table = pa.Table.from_pylist([asdict(r) for r in records], schema=SCHEMA)
    with fs.open(name + ".tmp", "wb") as fh:
        pq.write_table(table, fh)
    fs.mv(name + ".tmp", name)
    for path in old:
        fs.rm(path)


def _fetch_origins(args: tuple) -> list[OriginRecord]:
    """Spark task: each origin's consent files, once, through one fetcher's host scheduler."""
    from pipeline.fetch.fetcher import Fetcher
    from pipeline.fetch.hosts import HostScheduler
    from pipeline.fetch.outcome import FetchResult

    dl, robots, overrides, origins = args  # the run's config sections, pickled (fetch/ imports no config)
    fetcher = Fetcher.from_config(dl, robots, **overrides)
    cache = fetcher.robots
    assert cache is not None
    records: list[OriginRecord] = []

    def ask(url: str) -> FetchResult:  # one origin, its files read with the fetcher's own side-file reads
        rec = cache.record(origin_of(url))
        records.append(rec)
        return FetchResult(url, b"", None if rec.status != "unavailable" else "robots_unavailable",
                           connected=True)

    try:
        scheduler = HostScheduler(ask, fetcher.politeness, failure_limit=0)
        scheduler.load(origins, lambda o: o + "/robots.txt")
        for _ in scheduler.run(min(16, max(1, len(origins))), None):
            pass
    finally:
        fetcher.close()
    return records


def build(spark, origins: Iterable[str], folder: str, dl, robots, **fetcher_overrides) -> list[OriginRecord]:
    """Make ``folder``'s table cover ``origins`` (fetching only those without a fresh record) and return
    the records of ``origins``; ``dl``/``robots`` are the run's DownloadConfig and RobotsConfig."""
    from pipeline.fetch.hosts import host_key

    wanted = sorted({o.lower() for o in origins})
    fresh = read_table(folder)
    missing = [o for o in wanted if o not in fresh]
    if missing:
        sc = spark.sparkContext
        n = max(1, min(len(missing), sc.defaultParallelism))
        groups: list[list[str]] = [[] for _ in range(n)]
        for o in missing:  # every origin of a host in one task: the host's pace holds
            groups[hash(host_key(o + "/")) % n].append(o)
        tasks = [(dl, robots, fetcher_overrides, g) for g in groups if g]
        sc.setJobDescription(f"wit robots: {len(missing)} origins")
        for rec in sc.parallelize(tasks, len(tasks)).flatMap(_fetch_origins).collect():
            fresh[rec.origin] = rec
        write_table(folder, fresh.values())
    log.info(f"robots: {len(wanted)} origins, {len(missing)} fetched, {len(wanted) - len(missing)} from {folder}")
    return [fresh[o] for o in wanted if o in fresh]


def origins_of(urls: Iterable[str | None]) -> set[str]:
    """The distinct http(s) origins of some URLs (a URL that does not parse has none: the fetcher records it)."""
    out = set()
    for url in urls:
        try:
            origin = origin_of(url or "")
        except ValueError:
            continue
        if origin.startswith(("http://", "https://")) and not origin.endswith("://"):
            out.add(origin)
    return out
