"""Crawl throughput against the politeness limit: pages/s of `wit crawl` on a many-host web where each
host may be asked once every ``crawl.min_interval_s``, so the best any polite crawler can do is
hosts / interval requests per second. Baseline: that limit. Goal: >= 80% of it.

The web: the sample site served by one server per host on 127.0.0.2, 127.0.0.3 … (distinct host
names, so the fetcher schedules them as different hosts), each crawled from its home page with the
traps bounded by the per-host budget. Requests are counted by the servers (robots.txt excluded).
Peak RSS is the driver process's (servers included; the fetches run in Spark's Python workers).
A host's n requests span (n - 1) intervals, so a short run can show a little over 100% of the
limit. Printed for the whole crawl and for its fetch
jobs alone (each round's next frontier comes between them: computed on the driver for a round this small,
crawl.driver_frontier_max_urls; a Spark job above it, a few seconds whatever the round's size).

Frontier memory: in a fresh process, the next frontier of 10⁵, 10⁶ and 10⁷ new URLs (1,000 hosts),
computed by the Spark job (forced at every size: crawl.driver_frontier_max_urls 0) from synthetic fetched pages of 10 links each; peak RSS of the driver's
Python, the JVM and the largest Python worker compared across sizes (flat: the goal).

  python -m bench crawl [--quick]
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench/results/crawl.json"


def run(hosts: int, interval_s: float, per_host: int, threads: int) -> dict:
    from pipeline.config import load_config
    from pipeline.crawl import run_crawl
    from pipeline.sample_web import SampleWebServer, generate_sample_web

    with tempfile.TemporaryDirectory(prefix="wit_bench_crawl_") as tmp:
        root = Path(tmp)
        generate_sample_web(str(root / "sample"), n_pairs=max(300, per_host * 6), seed=0)
        servers = [SampleWebServer(root / "sample", host=f"127.0.0.{i + 2}").start() for i in range(hosts)]
        try:
            cfg = load_config(overrides={
                "output_dir": str(root / "out"), "download.allow_hosts": [f"{s.host}:{s.port}" for s in servers],
                "download.timeout_s": 5.0, "crawl.min_interval_s": interval_s, "crawl.max_crawl_delay_s": 0.0,
                "crawl.max_depth": 3, "crawl.max_pages_per_host": per_host, "crawl.threads": threads,
                "crawl.part_pages": hosts * per_host})
            from pipeline.spark import get_spark

            spark = get_spark(cfg.spark)  # started before the clock: the crawl is measured, not the JVM's start
            t0 = time.perf_counter()
            stats = run_crawl(cfg, spark, input=[s.url + "/" for s in servers])
            secs = time.perf_counter() - t0
            requests = sum(n for s in servers for p, n in s.hits.items() if p != "/robots.txt")
        finally:
            for s in servers:
                s.stop()
    limit = hosts / interval_s
    rate = requests / secs
    fetch_rate = requests / stats["extra"]["fetch_s"]
    return {"hosts": hosts, "min_interval_s": interval_s, "pages_per_host": per_host, "threads": threads,
            "requests": requests, "pages_stored": stats["output_rows"], "rounds": stats["extra"]["rounds"],
            "seconds": round(secs, 2), "requests_per_s": round(rate, 1), "limit_per_s": round(limit, 1),
            "share_of_limit": round(rate / limit, 3), "fetch_s": stats["extra"]["fetch_s"],
            "frontier_s": stats["extra"]["frontier_s"], "fetch_requests_per_s": round(fetch_rate, 1),
            "fetch_share_of_limit": round(fetch_rate / limit, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _peak_rss_mb(pid: int) -> float:
    """A process's peak RSS (VmHWM) in MB, 0 when it is gone."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(c) for t in os.listdir(f"/proc/{p}/task")
                    for c in open(f"/proc/{p}/task/{t}/children").read().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def frontier_child(next_urls: int, links_per_page: int = 10, part_pages: int = 10_000) -> dict:
    """In a fresh process: compute a next frontier of ``next_urls`` new URLs (on 1,000 hosts) from
    synthetic fetched pages (the Spark job of ``Rounds.next_frontier``); its time and the peak RSS of
    the driver's Python, of the JVM (local[2], its heap capped at 1 GB at every size) and of the
    largest Python worker."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.config import load_config
    from pipeline.crawl import FRONTIER, PAGES, Rounds, Scope
    from pipeline.spark import get_spark
    from pipeline.stage import StageContext
    from pipeline.stats import StageStats

    with tempfile.TemporaryDirectory(prefix="wit_bench_frontier_") as tmp:
        cfg = load_config(overrides={"output_dir": tmp, "crawl.scope": "any", "crawl.max_pages": 10**9,
                                     "crawl.max_pages_per_host": 10**9, "spark.master": "local[2]",
                                     "crawl.driver_frontier_max_urls": 0,  # the Spark job at every size
                                     "spark.driver_memory": "1g"})  # the same heap at every size: Spark spills
        spark = get_spark(cfg.spark)
        rounds = Rounds(StageContext("crawl", cfg, None, tmp, tmp, False, StageStats("crawl"), _spark=spark))
        pages = next_urls // links_per_page
        os.makedirs(rounds.path("frontier", 0))
        for k in range(0, pages, part_pages):
            ids = range(k, min(k + part_pages, pages))
            frontier = [{"url": f"http://h{i % 1000}.example/p/{i}", "depth": 0, "host": f"h{i % 1000}.example",
                         "group": 0} for i in ids]
            pq.write_table(pa.Table.from_pylist(frontier, schema=FRONTIER),
                           f"{rounds.path('frontier', 0)}/part-{k // part_pages:05d}.parquet")
            rows = [{"url": f"http://h{i % 1000}.example/p/{i}", "depth": 0,
                     "reason": None, "links": [f"http://h{(i + j) % 1000}.example/r/{i}/{j}" for j in range(links_per_page)]}
                    for i in ids]
            pq.write_table(pa.Table.from_pylist(rows, schema=PAGES), rounds.path("pages", 0, 0, k // part_pages))
            del frontier, rows
        import gc

        gc.collect()
        base = _peak_rss_mb(os.getpid())  # VmHWM, not ru_maxrss: that keeps the parent's peak across exec
        jvm = spark.sparkContext._gateway.proc.pid
        t0 = time.perf_counter()
        rounds.next_frontier(0, Scope(cfg.crawl, set()))
        secs = time.perf_counter() - t0
        workers = max((_peak_rss_mb(p) for p in _descendants(jvm)), default=0.0)
        jvm_mb = _peak_rss_mb(jvm)
        import pyarrow.dataset as ds

        queued = ds.dataset(rounds.path("frontier", 1), format="parquet").count_rows()
        spark.stop()
    peak = _peak_rss_mb(os.getpid())
    return {"pages": pages, "next_frontier_urls": queued, "seconds": round(secs, 1),
            "urls_per_s": round(queued / secs), "driver_peak_rss_mb": round(peak, 1),
            "driver_rss_before_mb": round(base, 1), "jvm_peak_rss_mb": round(jvm_mb, 1),
            "worker_peak_rss_mb": round(workers, 1), "spark_driver_memory": cfg.spark.driver_memory}


def frontier_memory(next_urls: int) -> dict:
    import subprocess

    code = f"import json; from bench.crawl import frontier_child; print(json.dumps(frontier_child({next_urls})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(quick: bool = False) -> dict:
    # Each round's Spark jobs cost a few seconds whatever its size (a real round takes hours), so the
    # hosts get enough pages for a round of about 40 s.
    sets = [(4, 0.05, 30, 8)] if quick else [(8, 0.1, 400, 16), (32, 0.2, 200, 32)]
    run(2, 0.01, 10, 4)  # warm-up, not recorded: the session's first jobs plan and start slower
    results = []
    for hosts, interval, per_host, threads in sets:
        r = run(hosts, interval, per_host, threads)
        print(f"crawl: {r['hosts']} hosts, 1 request/{r['min_interval_s']}s each: {r['requests']} requests in "
              f"{r['seconds']}s ({r['rounds']} rounds) = {r['requests_per_s']}/s = {r['share_of_limit']:.0%} of the "
              f"{r['limit_per_s']}/s limit; fetch jobs alone {r['fetch_requests_per_s']}/s = "
              f"{r['fetch_share_of_limit']:.0%}; next frontiers {r['frontier_s']}s; peak RSS {r['peak_rss_mb']} MB",
              flush=True)
        results.append(r)
    memory = []
    for n in ([10**5] if quick else [10**5, 10**6, 10**7]):
        m = frontier_memory(n)
        print(f"crawl: next frontier of {m['next_frontier_urls']:,} URLs from {m['pages']:,} pages in {m['seconds']}s "
              f"({m['urls_per_s']:,} URLs/s), peak RSS: driver {m['driver_peak_rss_mb']} MB, JVM {m['jvm_peak_rss_mb']} MB "
              f"(heap cap {m['spark_driver_memory']}), largest Python worker {m['worker_peak_rss_mb']} MB", flush=True)
        memory.append(m)
    out = {"quick": quick, "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
           "runs": results, "frontier_memory": memory}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
