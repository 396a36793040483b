"""The whole pipeline end to end on a many-host simulated web: which stage is the bottleneck.

The simulated web is bench/_simweb.py's (``--hosts`` hosts on their own 127.x.y.z addresses, with its
fault mix: 5% dead, 2% DNS tarpits, 5% rate-limiting, 5% slow). Its pages (one HTML page per run of
4–16 images of one host, each ``<img>`` with an English alt text) are written here as WARC files, so
extraction reads real WARC records; download then fetches the images from the served hosts. Every
stage of ``wit run`` from extract through select runs on ``local[*]``, then a short training run.

``--from crawl``: the pages are not written but served, each host with a home page linking its pages,
and the run starts with `wit crawl` from every host's home page (a seeds file, as a user gives one;
CRAWL has the settings: one request per host per second, the defaults), whose WARC output extract reads.

Recorded per stage: rows in/out, drops by reason, wall time, rows/s per core, peak RSS of the driver (this Python),
the JVM and the Python workers (psutil, the whole process tree sampled every 0.25 s), shuffle bytes
written (the Spark UI's REST API, by job group), output bytes and file count. The bottleneck is the
stage with the largest wall time (train left out: its length is a setting).

Scoring uses the tiny ``wit-tiny`` CLIP (random weights: same work per pair as a trained one) so
that CPU scoring does not stand in for what a GPU does at scale (bench/results/score_gpu.json has
ViT-B/32 on a GPU); say so when quoting the score row.

  python -m bench.e2e [--pairs 2000] [--hosts 200] [--master local[*]] [--out bench/results/e2e.json]
  python -m bench.e2e --from crawl --pairs 10000 --hosts 400   # crawl → extract → … → select, train
  python -m bench.e2e --pairs 10000 --workers 1 --stages extract,filter,queries,match,balance,select   # scaling
  python -m bench.e2e --real-yield   # candidate pairs per page on the real archives (WIT_REAL_DATA)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench import real_data

ROOT = Path(__file__).resolve().parent.parent
for k, v in {"NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled", "PYSPARK_PYTHON": sys.executable}.items():
    os.environ.setdefault(k, v)

STAGES = ["extract", "filter", "queries", "match", "balance", "download", "score", "select", "train"]
OUTPUTS = {"crawl": "crawl", "extract": "candidates", "filter": "filtered", "queries": "queries", "match": "matched",
           "balance": "balanced", "download": "shards", "score": "scores", "select": "final", "train": "train"}
CPU_STAGES = ["extract", "filter", "match", "balance", "select"]  # Spark-only work, no network or model

NOUNS = ["dog", "cat", "house", "car", "tree", "mountain", "river", "bicycle", "guitar", "chair", "table", "bridge",
         "flower", "horse", "boat", "beach", "garden", "kitchen", "window", "street", "forest", "castle", "lamp",
         "camera", "train", "airplane", "bird", "apple", "cake", "book"]
ADJS = ["red", "old", "small", "large", "wooden", "beautiful", "modern", "green", "quiet", "bright", "dark", "white"]
PLACES = ["in the park", "near the lake", "at sunset", "on a sunny day", "in the city", "during winter",
          "by the sea", "in the morning", "under the clouds", "on the hill"]


def caption(rng: random.Random) -> str:
    return f"A {rng.choice(ADJS)} {rng.choice(NOUNS)} {rng.choice(PLACES)} with a {rng.choice(NOUNS)} nearby"


# --from crawl: what a user crawling 2,000 sites would set (the rest are crawl.* defaults: 16 threads per task,
# one task per core, 1,000 pages per host at most, a Crawl-delay honoured up to 10 s).
CRAWL = {"max_depth": 1,  # the home page and the pages it links: the whole simulated site
         "min_interval_s": 1.0}  # one request per host per second (the default): many hosts are crawled at once


def make_pages(urls: list[dict], port: int, seed: int = 0) -> list[tuple[str, str]]:
    """(page URL, HTML) of each page: a run of up to 16 of one host's images in ``urls``, each with an alt text."""
    rng = random.Random(seed)
    runs: list[list[dict]] = []
    for u in urls:
        if runs and runs[-1][0]["host"] == u["host"] and len(runs[-1]) < 16:
            runs[-1].append(u)
        else:
            runs.append([u])
    pages = []
    for k, run in enumerate(runs):
        imgs = "".join(f'<p><img src="{u["url"]}" alt="{caption(rng)}"></p>' for u in run)
        pages.append((f"http://{run[0]['host']}:{port}/p/{k}.html",
                      f"<html><head><title>page {k}</title></head><body>{imgs}</body></html>"))
    return pages


def site_pages(pages: list[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """The pages by host and path, as the simulated web serves them."""
    from urllib.parse import urlsplit

    out: dict[str, dict[str, str]] = {}
    for url, body in pages:
        parts = urlsplit(url)
        out.setdefault(parts.hostname, {})[parts.path] = body
    return out


def write_warcs(folder: Path, pages: list[tuple[str, str]], n_files: int) -> list[str]:
    """One WARC response record per page, spread over ``n_files``."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"sim-{i:05d}.warc.gz" for i in range(n_files)]
    handles = [open(p, "wb") for p in paths]  # noqa: SIM115 - closed below
    writers = [WARCWriter(h, gzip=True) for h in handles]
    for k, (url, body) in enumerate(pages):
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
        rec = writers[k % n_files].create_warc_record(url, "response", payload=io.BytesIO(body.encode()),
                                                      http_headers=http)
        writers[k % n_files].write_record(rec)
    for h in handles:
        h.close()
    return [str(p) for p in paths]


class MemorySampler:
    """Peak RSS (MiB) of this process, the JVM it started and the Python workers under the JVM."""

    def __init__(self, every_s: float = 0.25):
        self.every_s, self.peak = every_s, {"driver": 0.0, "jvm": 0.0, "python_workers": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        now = {"driver": me.memory_info().rss, "jvm": 0, "python_workers": 0}
        for p in me.children(recursive=True):
            try:
                kind = "jvm" if p.name() == "java" else "python_workers"
                now[kind] += p.memory_info().rss
            except psutil.Error:
                continue
        for k, v in now.items():
            self.peak[k] = max(self.peak[k], round(v / 2**20, 1))

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def __enter__(self) -> MemorySampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def shuffle_bytes(spark, group: str) -> int | None:
    """Shuffle bytes written by the jobs of job group ``group``, from the Spark UI's REST API (None: no UI)."""
    ui = spark.sparkContext.uiWebUrl
    if not ui:
        return None
    base = f"{ui}/api/v1/applications/{spark.sparkContext.applicationId}"
    with urllib.request.urlopen(f"{base}/jobs", timeout=10) as r:
        jobs = json.load(r)
    ids = {s for j in jobs if j.get("jobGroup") == group for s in j["stageIds"]}
    with urllib.request.urlopen(f"{base}/stages", timeout=10) as r:
        stages = json.load(r)
    return sum(s.get("shuffleWriteBytes", 0) for s in stages if s["stageId"] in ids)


def folder_size(path: str) -> tuple[int, int]:
    total = n = 0
    for folder, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(folder, f))
            n += 1
    return total, n


def build_config(out: Path, warcs: list[str], queries: Path, dns: str, names: list[str], master: str, n_pairs: int,
                 seeds: str | None = None):
    """The run's config; with ``seeds`` (a seeds file) it crawls first, and extract reads the crawl's WARC
    files (extract's default input when crawl.seeds is set, as in `wit demo --crawl`)."""
    from pipeline.config import RunConfig

    shard = max(100, min(2000, n_pairs // 8))
    cluster = {"executor_memory": "768m", "shuffle_partitions": 4} if master.startswith("spark://") else {}
    return RunConfig.model_validate({
        "output_dir": str(out),
        "spark": {"master": master, "driver_memory": "2g", **cluster,
                  "conf": {"spark.ui.enabled": "true", "spark.ui.port": "0", "spark.ui.showConsoleProgress": "false"}},
        **({"crawl": {"seeds": [seeds], **CRAWL}} if seeds else {"extract": {"inputs": warcs}}),
        "queries": {"path": str(queries)},
        "balance": {"t": max(50, n_pairs // 20)},
        "download": {"shard_size": shard, "threads": 32, "timeout_s": 3.0, "retries": 1, "allow_hosts": names,
                     "dns_servers": [dns], "job_host_connections": 4, "image_size": 64},
        "score": {"model": "wit-tiny", "device": "cpu", "batch_size": 128, "num_workers": 1, "safety": False},
        # The simulated web serves 16 distinct images: image dedup and near-dup would keep ~16 pairs.
        "select": {"shard_size": shard, "dedup_images": False, "near_dup": False},
        "train": {"steps": 10, "batch_size": 32},
    })


def run_stages(cfg, spark, stages: list[str], cores: int) -> list[dict]:
    from pipeline import registry

    rows = []
    for name in stages:
        spark.sparkContext.setJobGroup(f"e2e-{name}", name)
        with MemorySampler() as mem:
            t0 = time.perf_counter()
            stats = registry.get(name).run(cfg, spark, overwrite=True) or {}
            wall = time.perf_counter() - t0
        rows_in = stats.get("input_rows")
        rows_out = stats.get("output_rows", stats.get("count"))
        nbytes, nfiles = folder_size(cfg.path(OUTPUTS[name]))
        basis = rows_in if rows_in is not None else rows_out
        row = {"stage": name, "rows_in": rows_in, "rows_out": rows_out, "wall_s": round(wall, 2),
               "rows_per_s_per_core": round(basis / wall / cores, 1) if basis else None,
               "peak_rss_mib": dict(mem.peak), "shuffle_write_bytes": shuffle_bytes(spark, f"e2e-{name}"),
               "output_bytes": nbytes, "output_files": nfiles, "drops": stats.get("drops") or {}}
        if name == "crawl":  # its time split: the fetches (politeness-bound) and the frontier jobs (Spark)
            row.update({k: stats.get("extra", {}).get(k) for k in ("rounds", "hosts", "fetch_s", "frontier_s")})
        rows.append(row)
        print(f"  {name:9s} {wall:7.1f}s  in {rows_in}  out {rows_out}  {row['rows_per_s_per_core']} rows/s/core  "
              f"rss {mem.peak}  shuffle {row['shuffle_write_bytes']}  out {nbytes / 2**20:.1f} MiB/{nfiles} files",
              flush=True)
    return rows


def run_e2e(n_pairs: int, n_hosts: int, master: str, tmp: Path, stages: list[str] = STAGES,
            cluster_cores: int | None = None, from_crawl: bool = False) -> dict:
    """``from_crawl``: serve the pages and crawl them (stages should start with crawl), else write them as WARC."""
    from bench._simweb import SimWeb, free_port, make_urls, plan_web
    from pipeline.spark import get_spark

    hosts = plan_web(n_hosts, seed=0)
    port = free_port()
    urls = make_urls(hosts, n_pairs, port)
    t0 = time.perf_counter()
    pages = make_pages(urls, port)
    n_files = max(2, n_pairs // 2000)
    warcs, seeds, served = [], None, {}
    if from_crawl:
        seeds = tmp / "seeds.txt"  # every host's home page, dead and tarpit ones too: a user's list of sites
        seeds.write_text("".join(f"http://{h['name']}:{port}/\n" for h in hosts))
        served = site_pages(pages)
    else:
        warcs = write_warcs(tmp / "warc", pages, n_files)
    queries = tmp / "queries.txt"
    queries.write_text("\n".join(NOUNS + ADJS) + "\n")
    gen_s = time.perf_counter() - t0
    cores = os.cpu_count() or 1
    if master.startswith("local[") and master[6:-1].isdigit():
        cores = int(master[6:-1])
    with SimWeb(hosts, port, tmp / "srv", pages=served) as web:
        cfg = build_config(tmp / "out", warcs, queries, web.dns, [h["name"] for h in hosts], master, n_pairs,
                           seeds=str(seeds) if seeds else None)
        spark = get_spark(cfg.spark)
        if cluster_cores:  # the workers' cores (Spark's defaultParallelism is at least 2)
            cores = cluster_cores
        t0 = time.perf_counter()
        rows = run_stages(cfg, spark, stages, cores)
        total = time.perf_counter() - t0
    pipeline_rows = [r for r in rows if r["stage"] != "train"]  # train's length is a setting, not the data's
    bottleneck = max(pipeline_rows or rows, key=lambda r: r["wall_s"])
    kinds = {k: sum(h["kind"] == k for h in hosts) for k in ("healthy", "slow", "dead", "tarpit", "ratelimit")}
    res = {"from": "crawl" if from_crawl else "extract", "pairs": n_pairs, "hosts": n_hosts, "host_kinds": kinds,
           "pages": len(pages)}
    if from_crawl:
        res["crawl"] = {"settings": {**CRAWL, "timeout_s": cfg.download.timeout_s, "threads": cfg.crawl.threads,
                                     "tasks": cfg.crawl.tasks or spark.sparkContext.defaultParallelism},
                        "pages_served": sum(s.get("pages", 0) for s in web.stats.values()),
                        "requests": sum(s["requests"] for s in web.stats.values())}
    else:
        res.update(warc_files=n_files, warc_bytes=sum(os.path.getsize(w) for w in warcs))
    return {**res, "generate_s": round(gen_s, 1), "master": master,
            "cores": cores, "total_s": round(total, 1), "stages": rows, "bottleneck": bottleneck["stage"],
            "bottleneck_share": round(bottleneck["wall_s"] / sum(r["wall_s"] for r in pipeline_rows or rows), 3),
            # score runs on GPUs at scale (bench/results/score_gpu.json): the bottleneck of the rest
            "bottleneck_without_score": max((r for r in pipeline_rows if r["stage"] != "score"),
                                            key=lambda r: r["wall_s"], default=bottleneck)["stage"]}


def real_archive_yield(tmp: Path, folder: Path | None = None) -> dict:
    """Candidate pairs per HTML page when extracting the real Common Crawl/web archives under WIT_REAL_DATA
    (WARC and WAT; cut files read leniently): the yield the capacity plan scales by pages per WAT."""
    from pipeline import registry
    from pipeline.config import RunConfig
    from pipeline.spark import get_spark

    if folder is None:
        if real_data() is None:
            raise SystemExit("--real-yield reads real archives: set WIT_REAL_DATA to the real-data folder (`make bench` does)")
        folder = real_data() / "warc"
    files = sorted(str(p) for p in folder.glob("*") if ".war" in p.name and "clipped" not in p.name)
    if not files:
        raise SystemExit(f"no archives under {folder}")
    cfg = RunConfig.model_validate({"output_dir": str(tmp / "real"), "spark": {"master": "local[2]"}})
    stats = registry.get("extract").run(cfg, get_spark(cfg.spark), input=files, overwrite=True)
    extra = stats.get("extra", {})
    pages, pairs = extra.get("pages", 0), stats.get("output_rows", 0)  # pairs after extract's (url, text) dedup
    per_file = {Path(f["path"]).name: {k: f.get(k, 0) for k in ("pages", "images", "pairs")}
                for f in extra.get("per_file", [])}
    # One picked gallery page (861 captioned images) outweighs the rest: the trimmed figure leaves out the
    # file with the most pairs per page, and is what the capacity plan uses.
    top = max((f for f in per_file.values() if f["pages"]), key=lambda f: f["pairs"] / f["pages"])
    return {"pages": pages, "pairs": pairs, "pairs_per_page": round(pairs / max(pages, 1), 2),
            "pages_trimmed": pages - top["pages"], "pairs_trimmed": sum(f["pairs"] for f in per_file.values()) - top["pairs"],
            "pairs_per_page_trimmed": round((sum(f["pairs"] for f in per_file.values()) - top["pairs"])
                                            / max(pages - top["pages"], 1), 2),
            "per_file": per_file}


def main(quick: bool = False, pairs: int | None = None, hosts: int | None = None, master: str = "local[*]",
         out: str | None = None, stages: list[str] = STAGES, key: str | None = None, workers: int = 0,
         from_: str = "extract") -> dict:
    """``workers``: run on a standalone cluster of that many 1-core workers started here (tests/cluster.py).
    ``from_="crawl"``: crawl the served pages first (crawl is put before ``stages``)."""
    import platform

    pairs = pairs or (500 if quick else 2000)
    hosts = hosts or max(20, pairs // 50)
    from_crawl = from_ == "crawl"
    if from_crawl and "crawl" not in stages:
        stages = ["crawl", *stages]
    with tempfile.TemporaryDirectory(prefix="wit-e2e-") as tmp:
        if workers:
            from tests.cluster import SparkCluster

            with SparkCluster(Path(tmp) / "cluster", n_workers=workers, cores=1, memory="1g") as c:
                res = run_e2e(pairs, hosts, c.master_url, Path(tmp), stages, cluster_cores=workers,
                              from_crawl=from_crawl)
            res["workers"] = workers
        else:
            res = run_e2e(pairs, hosts, master, Path(tmp), stages, from_crawl=from_crawl)
    res["note"] = (f"measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} CPUs "
                   f"({platform.machine()}), shared with other work. Score: wit-tiny (random init) on the CPU, so "
                   "CPU scoring does not stand for GPU scoring at scale (bench/results/score_gpu.json). Train: 10 steps of wit-tiny, left out of the bottleneck. Select runs without image dedup and near-dup (the simulated web serves 16 distinct images, so they would keep ~16 pairs); near-dup is measured in bench/results/near_dup.json. Peak RSS is the whole process tree's during the stage (Python workers are reused across stages).")
    if from_crawl:
        res["note"] += (" Crawl: seeds = every host's home page (dead and tarpit hosts too), depth 1, one request per "
                        "host per second (crawl.min_interval_s), the other crawl.* defaults; its rows in are the URLs "
                        "queued (home pages and the pages they link), rows out the pages stored; its pace is set by "
                        "politeness and the faulty hosts' timeouts, not by the cores.")
    res["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]  # 1, 5, 15 min: how busy the machine was
    path = Path(out or ROOT / "bench" / "results" / "e2e.json")
    old = json.loads(path.read_text()) if path.exists() else {}
    old[key or f"{'from_crawl_' if from_crawl else ''}{pairs}_pairs_{master}"] = res
    path.write_text(json.dumps(old, indent=2) + "\n")
    print(f"  bottleneck: {res['bottleneck']} ({res['bottleneck_share']:.0%} of {res['total_s']}s); wrote {path}")
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=2000, help="image-text pairs in the simulated web")
    ap.add_argument("--hosts", type=int, default=None, help="hosts (default pairs/50, at least 20)")
    ap.add_argument("--master", default="local[*]", help="Spark master (local[N] or spark://host:port)")
    ap.add_argument("--workers", type=int, default=0, help="run on a standalone cluster of N 1-core workers "
                    "started here (tests/cluster.py), e.g. with --stages " + ",".join(CPU_STAGES))
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages, in order")
    ap.add_argument("--from", dest="from_", choices=["extract", "crawl"], default="extract",
                    help="start from WARC files written here (extract) or crawl the served pages first (crawl)")
    ap.add_argument("--key", default=None, help="the entry's name in the results file")
    ap.add_argument("--out", default=None, help="results file (default bench/results/e2e.json)")
    ap.add_argument("--real-yield", action="store_true", help="only measure pairs per page on the real archives")
    a = ap.parse_args()
    if a.real_yield:
        with tempfile.TemporaryDirectory(prefix="wit-e2e-") as t:
            y = real_archive_yield(Path(t))
        path = Path(a.out or ROOT / "bench" / "results" / "e2e.json")
        res = json.loads(path.read_text()) if path.exists() else {}
        res["real_archive_yield"] = y
        path.write_text(json.dumps(res, indent=1) + "\n")
        print(y)
        sys.exit(0)
    main(pairs=a.pairs, hosts=a.hosts, master=a.master, out=a.out, stages=a.stages.split(","), key=a.key,
         workers=a.workers, from_=a.from_)
