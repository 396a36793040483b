"""Download throughput and memory: `wit download` vs plain `img2dataset.download`, same run.

Both read the same URL list (the sample web's images, served locally by `wit serve`'s server, a
fresh server per run so one-shot faults behave the same) with the same shard size, threads per
process, processes (img2dataset: multiprocessing; ours: Spark local[P], session started before
the clock) and image size/mode/format; both compute sha256, neither extracts EXIF; retries=1.

Two URL sets: "clean" (the fault-free URLs of a 12,000-pair sample, about 22 shards of 500: pure
throughput, at a size where start-up — Spark's first job, each tool's imports in its worker
processes, ~5 s for either — is not most of the run) and "faults" (every URL of the first 3,000
pairs, ~10% faulty: slow drips, huge bodies, redirects to private addresses, bombs …). For each:
images/s, success rate, how many outcomes match the sample's ground truth ("correct") and
"unsafe successes" (a bomb, a cut file or a private-address redirect stored as an image). In the
faults set the server's slow drip lasts 30 s instead of 120 s and each process gets one shard, so
img2dataset (no total deadline: it waits out every drip, twice with retries=1) ends in about a minute.

"per shard": images/s of the shard work itself, from each tool's NNNNN_stats.json (durations
summed over shards), i.e. without process start-up, Spark scheduling and input splitting.

Memory per task vs input size: peak RSS of a process that gets one shard's rows from inputs of
N and 10N rows: ours reads its row range from the Parquet input; img2dataset's Reader loads the
whole input to split it (img2dataset issue #338).

"web": a simulated web of many hosts (bench/_simweb.py: default 2,000 hosts on their own 127.x.y.z
addresses with names, 100,000 tiny images in pages of 4–16 per host; 5% of hosts dead, 2% DNS
tarpits, 5% rate-limiting with 429 + Retry-After, 5% slow). Both tools get the same threads,
processes, shard size, timeout (5 s) and retries; ours asks the simulated web's DNS server
(download.dns_servers) and keeps at most 4 requests at once per host for the whole job
(download.job_host_connections, shared at run time by the two tasks: Spark's master is local);
img2dataset resolves like glibc does by default (bench/_simweb.py).
Each tool runs on all URLs and on the healthy hosts' URLs alone (same order), each run against a
fresh server. Reported: images/s, the share of healthy-host images fetched, the most connections
any host saw at once, total time over the time of the healthy work alone, and ours' shard tasks'
[start, end] seconds (``shard_spans_s``).

"consent": ours with the sites' consent checks on (the default: robots.txt and tdmrep.json once per
origin through the job's robots table, the opt-out headers) and off (download.consent=false), on the
simulated web's healthy hosts: requests added per image (goal ≤ 2%) and images/s on vs off.

  python -m bench download [--quick]
  python -m bench.download [--quick] [--sets clean,faults,memory,web] [--web-hosts N] [--web-images N]
  python -m bench.download --sets progress   # progress on vs off on the clean set (not in the default sets)

The web set's figures are kept per size: `web` for the default 2,000 hosts / 100,000 images, else
`web_<hosts>_hosts_<images>_images`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _outcomes_img2dataset(folder: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    out = {}
    for f in sorted(folder.glob("[0-9]*.parquet")):
        for r in pq.read_table(f, columns=["uid", "status"]).to_pylist():
            out[r["uid"]] = "success" if r["status"] == "success" else "failed"
    return out


def _outcomes_ours(folder: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    out = {}
    for f in sorted(folder.glob("[0-9]*.parquet")):
        for r in pq.read_table(f, columns=["uid", "status", "error_message"]).to_pylist():
            out[r["uid"]] = r["status"] if r["status"] == "success" else r["error_message"]
    return out


def _shard_spans(folder: Path) -> list[list[float]]:
    """Each shard's task as [start, end] seconds after the first one started (ours: NNNNN_stats.json),
    in shard order: when each task ends, and so what held the run's end."""
    stats = [json.loads(f.read_text()) for f in sorted(folder.glob("[0-9]*_stats.json"))]
    first = min((s["start_time"] for s in stats), default=0.0)
    return [[round(s["start_time"] - first, 1), round(s["end_time"] - first, 1)] for s in stats]


def _shard_rate(folder: Path, duration_key: str) -> float:
    """Images per second of shard work (each tool's own NNNNN_stats.json): start-up excluded."""
    ok = secs = 0.0
    for f in folder.glob("[0-9]*_stats.json"):
        d = json.loads(f.read_text())
        ok += d.get("successes", 0)
        secs += d.get(duration_key, 0.0)
    return round(ok / secs, 1) if secs else 0.0


def _run_img2dataset(src: Path, out: Path, p: dict) -> float:
    from img2dataset import download

    t0 = time.perf_counter()
    download(
        url_list=str(src), input_format="parquet", url_col="url", caption_col="text", save_additional_columns=["uid"],
        output_folder=str(out), output_format="webdataset", processes_count=p["processes"], thread_count=p["threads"],
        number_sample_per_shard=p["shard_size"], image_size=p["image_size"], resize_mode="border", encode_format="jpg",
        timeout=int(p["timeout"]), retries=p["retries"], extract_exif=False, compute_hash="sha256",
        distributor="multiprocessing", incremental_mode="incremental", enable_wandb=False,
    )
    return time.perf_counter() - t0


def _run_ours(spark, src: Path, out: Path, p: dict, port: int) -> float:
    from pipeline.config import load_config
    from pipeline.download import run_download

    cfg = load_config(overrides={
        "output_dir": str(out), "download.shard_size": p["shard_size"], "download.threads": p["threads"],
        "download.image_size": p["image_size"], "download.resize_mode": "border", "download.encode_format": "jpg",
        "download.timeout_s": p["timeout"], "download.retries": p["retries"],
        "download.allow_hosts": [f"127.0.0.1:{port}"],
    })
    t0 = time.perf_counter()
    run_download(cfg, spark, input=str(src), overwrite=True)
    return time.perf_counter() - t0


def throughput(tmp: Path, n_pairs: int, p: dict, sets: tuple[str, ...], repeat: bool = True, n_faults: int = 3000) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.config import SparkConfig
    from pipeline.ids import make_uid
    from pipeline.sample_web import SampleWebServer, generate_sample_web, server
    from pipeline.spark import get_spark

    server.DRIP_FOR_S = 30.0

    port = _free_port()
    generate_sample_web(str(tmp / "web"), n_pairs=n_pairs, seed=0, base_url=f"http://127.0.0.1:{port}")
    gt = pq.read_table(tmp / "web" / "ground_truth.parquet").to_pylist()
    t0 = time.perf_counter()
    spark = get_spark(SparkConfig(master=f"local[{p['processes']}]", driver_memory="2g"))
    spark_start = time.perf_counter() - t0
    results = {"spark_start_s": round(spark_start, 1)}
    for name in sets:
        picked = [(i, r) for i, r in enumerate(gt[:n_faults] if name == "faults" else gt)
                  if name == "faults" or r["fault"] is None]
        rows = [{"uid": make_uid(r["url"], str(i)), "url": r["url"], "text": r["true_caption"] or "x"} for i, r in picked]
        expected = {make_uid(r["url"], str(i)): r["expected_status"] for i, r in picked}
        d = tmp / name
        d.mkdir()
        pq.write_table(pa.Table.from_pylist(rows), d / "input.parquet")
        res = {"urls": len(rows)}
        q = dict(p, shard_size=-(-len(rows) // p["processes"])) if name == "faults" else p
        # Twice, in both orders: img2dataset's best run vs our first (cold Python workers, like its own).
        runs = 2 if name == "clean" and repeat else 1
        order = [("img2dataset", "ours"), ("ours", "img2dataset")][:runs]
        for k, who in enumerate(w for pair in order for w in pair):
            with SampleWebServer(tmp / "web" / "site", port=port):
                out = d / f"{who}{k}"
                if who == "ours":
                    secs = _run_ours(spark, d / "input.parquet", out, q, port)
                    got = _outcomes_ours(out / "shards")
                    shard_rate = _shard_rate(out / "shards", "duration_s")
                else:
                    secs = _run_img2dataset(d / "input.parquet", out, q)
                    got = _outcomes_img2dataset(out)
                    shard_rate = _shard_rate(out, "duration")
            ok = sum(v == "success" for v in got.values())
            correct = sum(got.get(u) == e or (who == "img2dataset" and e != "success" and got.get(u) == "failed")
                          for u, e in expected.items())
            print(f"  {name:6s} {who:11s} {secs:7.1f}s  {ok}/{len(rows)} ok  {ok / secs:7.1f} images/s  "
                  f"correct {correct}/{len(rows)}  per shard {shard_rate} images/s", flush=True)
            if who == "ours" and who in res:  # Spark keeps its Python workers: later runs skip their start-up
                who = "ours_warm"
            if who in res and res[who]["seconds"] <= secs:
                continue
            res[who] = {"seconds": round(secs, 2), "successes": ok, "images_per_s": round(ok / secs, 1),
                        "images_per_shard_s": shard_rate,
                        "success_rate": round(ok / len(rows), 4), "correct_outcomes": correct,
                        "unsafe_successes": sum(got.get(u) == "success" and e != "success" for u, e in expected.items())}
        res["speedup"] = round(res["ours"]["images_per_s"] / max(res["img2dataset"]["images_per_s"], 1e-9), 2)
        res["speedup_per_shard"] = round(res["ours"]["images_per_shard_s"] / max(res["img2dataset"]["images_per_shard_s"], 1e-9), 2)
        if "ours_warm" in res:
            res["speedup_warm"] = round(res["ours_warm"]["images_per_s"] / max(res["img2dataset"]["images_per_s"], 1e-9), 2)
        print(f"  {name}: ours/img2dataset images/s = {res['speedup']}x"
              + (f" (warm Spark workers: {res['speedup_warm']}x)" if "speedup_warm" in res else "")
              + f"; per shard of work: {res['speedup_per_shard']}x", flush=True)
        results[name] = res
    return results


# --- the simulated web of many hosts -------------------------------------------------------------

WEB = {"processes": 2, "threads": 64, "shard_size": 10_000, "image_size": 64, "timeout": 5.0, "retries": 1,
       "job_host_connections": 4}
HEALTHY = ("healthy", "slow", "ratelimit")  # hosts whose every image can be fetched

_I2D_RUN = """
import json, sys, time
from img2dataset import download
a = json.loads(sys.argv[1])
t0 = time.perf_counter()
download(url_list=a["src"], input_format="parquet", url_col="url", caption_col="text", save_additional_columns=["uid"],
         output_folder=a["out"], output_format="webdataset", processes_count=a["processes"], thread_count=a["threads"],
         number_sample_per_shard=a["shard_size"], image_size=a["image_size"], resize_mode="border", encode_format="jpg",
         timeout=int(a["timeout"]), retries=a["retries"], extract_exif=False, compute_hash="sha256",
         distributor="multiprocessing", incremental_mode="incremental", enable_wandb=False)
print("SECONDS", time.perf_counter() - t0)
"""


def _web_ours(spark, src: Path, out: Path, p: dict, dns: str, names: list[str], consent: bool = True) -> float:
    from pipeline.config import load_config
    from pipeline.download import run_download

    cfg = load_config(overrides={
        "output_dir": str(out), "download.shard_size": p["shard_size"], "download.threads": p["threads"],
        "download.image_size": p["image_size"], "download.resize_mode": "border", "download.encode_format": "jpg",
        "download.timeout_s": p["timeout"], "download.retries": p["retries"], "download.allow_hosts": names,
        "download.dns_servers": [dns], "download.job_host_connections": p["job_host_connections"],
        "download.concurrent_tasks": p["processes"], "download.consent": consent,
    })
    t0 = time.perf_counter()
    run_download(cfg, spark, input=str(src), overwrite=True)  # the robots table too (fresh output_dir per run)
    return time.perf_counter() - t0


def _web_img2dataset(src: Path, out: Path, p: dict, env: dict) -> float:
    args = json.dumps({**p, "src": str(src), "out": str(out)})
    r = subprocess.run([sys.executable, "-c", _I2D_RUN, args], env=env, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    return float(r.stdout.rsplit("SECONDS", 1)[1])


def web(tmp: Path, n_hosts: int, n_images: int, p: dict = WEB) -> dict:
    """Ours vs img2dataset on a simulated web of ``n_hosts`` hosts and ``n_images`` images (see the docstring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench._simweb import SimWeb, free_port, glibc_like_env, make_urls, plan_web
    from pipeline.config import SparkConfig
    from pipeline.ids import make_uid
    from pipeline.spark import get_spark

    p = dict(p, shard_size=min(p["shard_size"], -(-n_images // (2 * p["processes"]))))  # two waves of tasks at least
    hosts = plan_web(n_hosts, seed=0)
    port = free_port()
    urls = make_urls(hosts, n_images, port)
    for i, u in enumerate(urls):
        u["uid"] = make_uid(u["url"], str(i))
    kinds = {h["name"]: h["kind"] for h in hosts}
    d = tmp / "web"
    d.mkdir()
    inputs = {"all": urls, "healthy": [u for u in urls if u["kind"] in HEALTHY]}
    for name, rows in inputs.items():
        pq.write_table(pa.Table.from_pylist([{"uid": u["uid"], "url": u["url"], "text": "x"} for u in rows]),
                       d / f"{name}.parquet")
    per_kind = {k: sum(u["kind"] == k for u in urls) for k in ("healthy", "slow", "ratelimit", "dead", "tarpit")}
    print(f"  web: {n_hosts} hosts, {n_images} images {per_kind}, {p}", flush=True)
    spark = get_spark(SparkConfig(master=f"local[{p['processes']}]", driver_memory="2g"))
    names = [h["name"] for h in hosts]
    res: dict = {"hosts": n_hosts, "images": n_images, "images_by_kind": per_kind, "params": p,
                 "host_cap": p["job_host_connections"]}
    for inp, who in (("all", "img2dataset"), ("all", "ours"), ("healthy", "ours"), ("healthy", "img2dataset")):
        rows = inputs[inp]
        out = d / f"{who}_{inp}"
        with SimWeb(hosts, port, d / f"srv_{who}_{inp}") as w:
            if who == "ours":
                secs = _web_ours(spark, d / f"{inp}.parquet", out, p, w.dns, names)
                got = _outcomes_ours(out / "shards")
            else:
                secs = _web_img2dataset(d / f"{inp}.parquet", out, p, glibc_like_env(w.dns, d))
                got = _outcomes_img2dataset(out)
        ok = sum(v == "success" for v in got.values())
        healthy = [u for u in rows if u["kind"] in HEALTHY]
        healthy_ok = sum(got.get(u["uid"]) == "success" for u in healthy)
        most = max((s["most_open"] for s in w.stats.values()), default=0)
        most_busy = max((s["most_busy"] for s in w.stats.values()), default=0)
        by_kind = {k: round(sum(got.get(u["uid"]) == "success" for u in rows if u["kind"] == k)
                            / max(1, sum(u["kind"] == k for u in rows)), 4) for k in HEALTHY}
        reasons = {}
        if who == "ours":
            for u in rows:
                if got.get(u["uid"]) != "success":
                    key = f"{u['kind']}:{got.get(u['uid'])}"
                    reasons[key] = reasons.get(key, 0) + 1
        entry = {"seconds": round(secs, 2), "successes": ok, "images_per_s": round(ok / secs, 1),
                 "healthy_share": round(healthy_ok / max(1, len(healthy)), 4), "fetched_share_by_kind": by_kind,
                 "most_connections_one_host": most, "most_requests_at_once_one_host": most_busy,
                 "most_connections_by_kind": {k: max((s["most_open"] for n, s in w.stats.items() if kinds[n] == k), default=0)
                                              for k in HEALTHY},
                 "requests": sum(s["requests"] for s in w.stats.values()),
                 "answered_429": sum(s["too_many"] for s in w.stats.values())}
        if reasons:
            entry["failures_by_kind_and_reason"] = dict(sorted(reasons.items()))
        if who == "ours":
            entry["shard_spans_s"] = _shard_spans(out / "shards")
        res.setdefault(who, {})[inp] = entry
        print(f"  web {inp:7s} {who:11s} {secs:7.1f}s  {ok}/{len(rows)} ok  {ok / secs:7.1f} images/s  healthy-host "
              f"images fetched {entry['healthy_share']:.1%}  most connections to one host {most} "
              f"(requests at once {most_busy})  "
              f"429s {entry['answered_429']}", flush=True)
    for who in ("ours", "img2dataset"):
        r = res[who]
        r["time_over_healthy_alone"] = round(r["all"]["seconds"] / r["healthy"]["seconds"], 2)
    res["speedup"] = round(res["ours"]["all"]["images_per_s"] / max(res["img2dataset"]["all"]["images_per_s"], 1e-9), 2)
    print(f"  web: ours/img2dataset images/s = {res['speedup']}x; total over healthy-alone time: ours "
          f"{res['ours']['time_over_healthy_alone']}, img2dataset {res['img2dataset']['time_over_healthy_alone']}",
          flush=True)
    return res


def consent_cost(tmp: Path, n_hosts: int, n_images: int, p: dict = WEB) -> dict:
    """Ours with consent on (robots.txt and tdmrep.json once per origin, through the job's robots table)
    and off, on the simulated web's healthy hosts (no robots.txt or tdmrep.json there: 404s, so every
    image is allowed and the runs fetch the same images): requests added per image and images/s."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench._simweb import SimWeb, free_port, make_urls, plan_web
    from pipeline.config import SparkConfig
    from pipeline.spark import get_spark

    p = dict(p, shard_size=min(p["shard_size"], -(-n_images // (2 * p["processes"]))))
    hosts = [h for h in plan_web(n_hosts, seed=0) if h["kind"] == "healthy"]
    port = free_port()
    urls = make_urls(hosts, n_images, port)
    d = tmp / "consent"
    d.mkdir()
    pq.write_table(pa.Table.from_pylist([{"url": u["url"], "text": "x"} for u in urls]), d / "in.parquet")
    spark = get_spark(SparkConfig(master=f"local[{p['processes']}]", driver_memory="2g"))
    names = [h["name"] for h in hosts]
    res: dict = {"hosts": len(hosts), "images": len(urls), "params": p, "runs": []}
    for i, on in enumerate((False, True, False, True)):  # alternated: Spark's first job warms up for the rest
        label = "on" if on else "off"
        with SimWeb(hosts, port, d / f"srv_{i}") as w:
            secs = _web_ours(spark, d / "in.parquet", d / f"run{i}", p, w.dns, names, consent=on)
        ok = sum(v == "success" for v in _outcomes_ours(d / f"run{i}" / "shards").values())
        run = {"consent": label, "seconds": round(secs, 2), "successes": ok, "images_per_s": round(ok / secs, 1),
               "requests": sum(s["requests"] for s in w.stats.values())}
        res["runs"].append(run)
        print(f"  consent {label:3s} {secs:7.1f}s  {ok}/{len(urls)} ok  {ok / secs:7.1f} images/s  "
              f"{run['requests']} requests", flush=True)
    for label in ("off", "on"):
        runs = [r for r in res["runs"] if r["consent"] == label][1 if label == "off" else 0:]  # off's first: warm-up
        res[label] = {"images_per_s": round(sum(r["images_per_s"] for r in runs) / len(runs), 1),
                      "requests": runs[-1]["requests"], "successes": runs[-1]["successes"]}
    res["requests_added_per_image"] = round((res["on"]["requests"] - res["off"]["requests"]) / max(1, len(urls)), 4)
    res["images_per_s_on_over_off"] = round(res["on"]["images_per_s"] / max(res["off"]["images_per_s"], 1e-9), 3)
    print(f"  consent: {res['requests_added_per_image']:.2%} requests added per image, images/s on/off "
          f"{res['images_per_s_on_over_off']}", flush=True)
    return res


def progress_cost(tmp: Path, n_pairs: int, p: dict, repeats: int = 2) -> dict:
    """Ours on the clean set with progress on (the default: the shards' status files polled for the rows
    line, Spark's status tracker for the tasks line) and off (both watches made no-ops), ``repeats`` runs
    each in the order off, on, on, off … after an uncounted warm-up run: images/s on over off, and the
    spread between the runs of one setting (the noise)."""
    import contextlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import progress
    from pipeline.config import SparkConfig
    from pipeline.sample_web import SampleWebServer, generate_sample_web
    from pipeline.spark import get_spark

    @contextlib.contextmanager
    def progress_off():
        saved = progress.Watch.__enter__, progress.Watch.__exit__
        progress.Watch.__enter__, progress.Watch.__exit__ = (lambda w: w), (lambda w, *exc: None)
        try:
            yield
        finally:
            progress.Watch.__enter__, progress.Watch.__exit__ = saved

    port = _free_port()
    generate_sample_web(str(tmp / "pweb"), n_pairs=n_pairs, seed=0, base_url=f"http://127.0.0.1:{port}")
    gt = pq.read_table(tmp / "pweb" / "ground_truth.parquet").to_pylist()
    rows = [{"url": r["url"], "text": r["true_caption"] or "x"} for r in gt if r["fault"] is None]
    d = tmp / "progress"
    d.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), d / "input.parquet")
    pq.write_table(pa.Table.from_pylist(rows[: 2 * p["shard_size"]]), d / "warmup.parquet")
    spark = get_spark(SparkConfig(master=f"local[{p['processes']}]", driver_memory="2g"))
    with SampleWebServer(tmp / "pweb" / "site", port=port):
        _run_ours(spark, d / "warmup.parquet", d / "warmup", p, port)  # Spark's Python workers started
    order = [on for k in range(repeats) for on in ((False, True) if k % 2 == 0 else (True, False))]
    res: dict = {"urls": len(rows), "params": p, "runs": []}
    for i, on in enumerate(order):
        with SampleWebServer(tmp / "pweb" / "site", port=port), (contextlib.nullcontext() if on else progress_off()):
            secs = _run_ours(spark, d / "input.parquet", d / f"run{i}", p, port)
        ok = sum(v == "success" for v in _outcomes_ours(d / f"run{i}" / "shards").values())
        res["runs"].append({"progress": "on" if on else "off", "seconds": round(secs, 2), "successes": ok,
                            "images_per_s": round(ok / secs, 1)})
        print(f"  progress {'on ' if on else 'off'} {secs:7.1f}s  {ok}/{len(rows)} ok  {ok / secs:7.1f} images/s", flush=True)
    for label in ("off", "on"):
        rates = [r["images_per_s"] for r in res["runs"] if r["progress"] == label]
        res[label] = {"images_per_s": round(sum(rates) / len(rates), 1),
                      "spread": round(max(rates) / min(rates) - 1, 3)}  # between runs of one setting: the noise
    res["images_per_s_on_over_off"] = round(res["on"]["images_per_s"] / max(res["off"]["images_per_s"], 1e-9), 3)
    print(f"  progress: images/s on/off {res['images_per_s_on_over_off']} (spread between runs of one setting: "
          f"off {res['off']['spread']:.1%}, on {res['on']['spread']:.1%})", flush=True)
    return res


# Peak RSS of this process image (VmHWM; ru_maxrss would include the parent's peak at fork).
_HWM = "def HWM():\n    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) // 1024\n"
_OURS_MEM = _HWM + """
import sys
from pipeline.download import plan_shards, read_shard_rows
files, specs = plan_shards(sys.argv[1], int(sys.argv[2]))
rows = read_shard_rows(specs[-1])
print(len(rows), HWM())
"""
_I2D_MEM = _HWM + """
import os, sys, tempfile
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
from img2dataset.reader import Reader
r = Reader(sys.argv[1], "parquet", "url", "text", None, None, None, int(sys.argv[2]), set(), tempfile.mkdtemp())
last = None
for shard_id, path in r:
    last = shard_id
print(last, HWM())
"""


def memory(tmp: Path, sizes: list[int], shard_size: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = {}
    for n in sizes:
        d = tmp / f"mem{n}"
        d.mkdir()
        urls = pa.array([f"http://img{i % 977}.example.com/photos/{i:09d}/some-long-file-name-{i}.jpg" for i in range(n)])
        texts = pa.array([f"a photo of item number {i} with a reasonably long alt text describing it" for i in range(n)])
        pq.write_table(pa.table({"url": urls, "text": texts}), d / "input.parquet", row_group_size=50_000)
        res = {}
        for who, code in (("ours", _OURS_MEM), ("img2dataset", _I2D_MEM)):
            r = subprocess.run([sys.executable, "-c", code, str(d / "input.parquet"), str(shard_size)],
                               capture_output=True, text=True, cwd=ROOT, timeout=600)
            if r.returncode != 0:
                raise RuntimeError(r.stderr[-2000:])
            res[who] = int(r.stdout.split()[-1])
        print(f"  input {n:>9,} rows: peak RSS ours {res['ours']} MB, img2dataset reader {res['img2dataset']} MB", flush=True)
        out[str(n)] = res
    return out


SETS = ("clean", "faults", "memory", "web", "consent")


def _healthy_history(old: dict, res: dict, load_before: tuple) -> dict:
    """The web set's runs on the healthy hosts alone, one list per UTC day (``healthy_runs_YYYY_MM_DD``), kept
    from run to run with this run added: the two tools' times swing with the machine, one run proves little."""
    kept = {k: v for k, v in old.items() if k.startswith("healthy_runs_")}
    day = time.strftime("healthy_runs_%Y_%m_%d", time.gmtime())
    ours, theirs = res["ours"]["healthy"], res["img2dataset"]["healthy"]
    kept.setdefault(day, []).append({
        "utc": time.strftime("%H:%M", time.gmtime()), "ours_s": ours["seconds"], "img2dataset_s": theirs["seconds"],
        "ours_images_per_s": ours["images_per_s"], "img2dataset_images_per_s": theirs["images_per_s"],
        "speedup": round(ours["images_per_s"] / max(theirs["images_per_s"], 1e-9), 2),
        "load_avg_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    })
    return kept


def main(quick: bool = False, sets: tuple[str, ...] = SETS, web_hosts: int | None = None,
         web_images: int | None = None) -> dict:
    """Run ``sets``; bench/results/download.json keeps the latest figures of each set."""
    p = {"processes": 2, "threads": 16, "shard_size": 200 if quick else 500, "image_size": 256, "timeout": 10.0,
         "retries": 1}
    n_pairs, n_faults = (400, 400) if quick else (12_000, 3000)
    out = ROOT / "bench" / "results" / "download.json"
    result = json.loads(out.read_text()) if out.exists() and not quick else {}
    machine = {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench_download_") as t:
        tmp = Path(t)
        picked = tuple(s for s in ("clean", "faults") if s in sets and not (quick and s == "faults"))
        if picked:
            print(f"download bench: {n_pairs} sample pairs (faults set: the first {n_faults}), {p}", flush=True)
            tp = throughput(tmp, n_pairs, p, picked, repeat=not quick, n_faults=n_faults)
            result.update(params=p, n_pairs=n_pairs, n_faults=n_faults, quick=quick, machine=machine)
            result.setdefault("throughput", {}).update(tp)
        if "memory" in sets:
            result["memory_mb"] = memory(tmp, [20_000, 200_000] if quick else [100_000, 1_000_000], 10_000)
        if "web" in sets:
            hosts = web_hosts or (300 if quick else 2000)
            images = web_images or (3000 if quick else 100_000)
            key = "web" if (hosts, images) == (2000, 100_000) else f"web_{hosts}_hosts_{images}_images"
            load_before = os.getloadavg()
            res = web(tmp, hosts, images)
            result[key] = {**res, "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()},
                           **_healthy_history(result.get(key, {}), res, load_before)}
        if "progress" in sets:  # not in SETS: run it on its own, --sets progress
            result["progress"] = {**progress_cost(tmp, n_pairs, p), "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}}
        if "consent" in sets:
            hosts = web_hosts or (300 if quick else 2000)
            images = web_images or (3000 if quick else 100_000)
            result["consent"] = {**consent_cost(tmp, hosts, images),
                                 "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench.download", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    ap.add_argument("--web-hosts", type=int, help="hosts of the simulated web (default 2000)")
    ap.add_argument("--web-images", type=int, help="images of the simulated web (default 100000)")
    a = ap.parse_args()
    main(quick=a.quick, sets=tuple(a.sets.split(",")), web_hosts=a.web_hosts, web_images=a.web_images)
