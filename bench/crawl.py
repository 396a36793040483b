"""Crawl throughput against the politeness limit: pages/s of `wit crawl` on a many-host web where each
host may be asked once every ``crawl.min_interval_s``, so the best any polite crawler can do is
hosts / interval requests per second. Baseline: that limit. Goal: >= 80% of it.

The web: the sample site served by one server per host on 127.0.0.2, 127.0.0.3 … (distinct host
names, so the fetcher schedules them as different hosts), each crawled from its home page with the
traps bounded by the per-host budget. Requests are counted by the servers (robots.txt excluded).
Peak RSS is the whole process's (servers included). A host's n requests span (n - 1) intervals, so
a short run can show a little over 100% of the limit.

Frontier memory: in a fresh process, the next frontier of 10⁵ and 10⁶ new URLs (1,000 hosts),
computed from synthetic fetched pages of 10 links each; peak RSS compared.

  python -m bench crawl [--quick]
"""

from __future__ import annotations

import json
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
            t0 = time.perf_counter()
            stats = run_crawl(cfg, input=[s.url + "/" for s in servers])
            secs = time.perf_counter() - t0
            requests = sum(n for s in servers for p, n in s.hits.items() if p != "/robots.txt")
        finally:
            for s in servers:
                s.stop()
    limit = hosts / interval_s
    rate = requests / secs
    return {"hosts": hosts, "min_interval_s": interval_s, "pages_per_host": per_host, "threads": threads,
            "requests": requests, "pages_stored": stats["output_rows"], "rounds": stats["extra"]["rounds"],
            "seconds": round(secs, 2), "requests_per_s": round(rate, 1), "limit_per_s": round(limit, 1),
            "share_of_limit": round(rate / limit, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def frontier_child(next_urls: int, links_per_page: int = 10, part_pages: int = 10_000) -> dict:
    """In a fresh process: compute a next frontier of ``next_urls`` new URLs (on 1,000 hosts) from
    synthetic fetched pages; its time and the process's peak RSS."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.config import load_config
    from pipeline.crawl import FRONTIER, PAGES, Rounds, Scope
    from pipeline.stage import StageContext
    from pipeline.stats import StageStats

    with tempfile.TemporaryDirectory(prefix="wit_bench_frontier_") as tmp:
        cfg = load_config(overrides={"output_dir": tmp, "crawl.scope": "any", "crawl.max_pages": 10**9,
                                     "crawl.max_pages_per_host": 10**9})
        rounds = Rounds(StageContext("crawl", cfg, None, tmp, tmp, False, StageStats("crawl")))
        pages = next_urls // links_per_page
        frontier = [{"url": f"http://h{i % 1000}.example/p/{i}", "depth": 0, "host": f"h{i % 1000}.example"}
                    for i in range(pages)]
        pq.write_table(pa.Table.from_pylist(frontier, schema=FRONTIER), rounds.path("frontier", 0))
        del frontier
        for k in range(0, pages, part_pages):
            rows = [{"url": f"http://h{i % 1000}.example/p/{i}", "depth": 0, "final_url": f"http://h{i % 1000}.example/p/{i}",
                     "reason": None, "links": [f"http://h{(i + j) % 1000}.example/r/{i}/{j}" for j in range(links_per_page)]}
                    for i in range(k, min(k + part_pages, pages))]
            pq.write_table(pa.Table.from_pylist(rows, schema=PAGES), rounds.path("pages", 0, k // part_pages))
        import gc

        gc.collect()
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        rounds.next_frontier(0, Scope(cfg.crawl, set()))
        secs = time.perf_counter() - t0
        queued = pq.read_metadata(rounds.path("frontier", 1)).num_rows
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"pages": pages, "next_frontier_urls": queued, "seconds": round(secs, 1),
            "urls_per_s": round(queued / secs), "peak_rss_mb": round(peak, 1), "rss_before_mb": round(base, 1)}


def frontier_memory(next_urls: int) -> dict:
    import subprocess

    code = f"import json; from bench.crawl import frontier_child; print(json.dumps(frontier_child({next_urls})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(quick: bool = False) -> dict:
    sets = [(4, 0.05, 30, 8)] if quick else [(8, 0.1, 60, 16), (32, 0.2, 40, 32)]
    results = []
    for hosts, interval, per_host, threads in sets:
        r = run(hosts, interval, per_host, threads)
        print(f"crawl: {r['hosts']} hosts, 1 request/{r['min_interval_s']}s each: {r['requests']} requests in "
              f"{r['seconds']}s = {r['requests_per_s']}/s = {r['share_of_limit']:.0%} of the {r['limit_per_s']}/s "
              f"limit; peak RSS {r['peak_rss_mb']} MB", flush=True)
        results.append(r)
    memory = []
    for n in ([10**5] if quick else [10**5, 10**6]):
        m = frontier_memory(n)
        print(f"crawl: next frontier of {m['next_frontier_urls']:,} URLs from {m['pages']:,} pages in {m['seconds']}s "
              f"({m['urls_per_s']:,} URLs/s), peak RSS {m['peak_rss_mb']} MB", flush=True)
        memory.append(m)
    out = {"quick": quick, "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
           "runs": results, "frontier_memory": memory}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
