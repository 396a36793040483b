"""`wit plan`: what a build of N final pairs needs on K nodes of C cores, from the rates this project measured.

Every number comes from a results file in ``bench/results/`` (the end-to-end bench, the download bench on
the simulated web, the GPU scoring and training benches) or from a flag whose default and source are in
``docs/scaling.md``; a missing results file is an error naming it and the command that writes it. The
plan works backwards from the final pairs: select keeps ``select.top_fraction`` of the scored pairs, a
download succeeds with ``--download-success``, filter+match+balance keep ``--curation-keep`` of the
candidates, and a WAT file gives ``pages per WAT`` × the candidate pairs per page measured on the real
archives (bench/e2e.py --real-yield, recorded in bench/results/e2e.json).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

from pipeline.errors import UserError

RESULTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "results")
WRITTEN_BY = {"e2e.json": "python -m bench.e2e --pairs 10000 && python -m bench.e2e --real-yield",
              "download.json": "python -m bench download", "score_gpu.json": "bench/gpu.sh (on a GPU machine)",
              "train_gpu.json": "bench/gpu.sh (on a GPU machine)"}
CPU_STAGES = ("extract", "filter", "match", "balance", "select")
# open_clip's model profile, GFLOPs per image + text at 224 px: ViT-L-14 81.08 + 6.45, ViT-B-32 4.41 + 2.96.
L14_OVER_B32_FLOPS = (81.08 + 6.45) / (4.41 + 2.96)
# Common Crawl's CC-MAIN-2024-22 announcement: 2.70 billion pages in 90,000 WARC files (one WAT per WARC).
PAGES_PER_WAT = 2_700_000_000 / 90_000


def _read(results_dir: str, name: str) -> dict:
    path = os.path.join(results_dir, name)
    if not os.path.exists(path):
        raise UserError(f"wit plan needs {path}: run `{WRITTEN_BY.get(name, 'python -m bench')}` first "
                        f"(or give --results DIR)")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); rerun `{WRITTEN_BY.get(name, 'python -m bench')}`") from None


@dataclass
class Rates:
    """The measured rates a plan is computed from, with where each came from."""

    cpu_rows_per_s_per_core: dict[str, float]  # extract … select, from the largest local e2e run
    download_images_per_s_per_core: float  # the simulated web of many hosts, faults included
    pairs_per_page: float  # candidate pairs per HTML page on the real archives
    score_pairs_per_s: dict[str, float]  # per GPU, by model
    train_samples_per_s: dict[str, float]  # per GPU, by model
    gpu: str
    sources: dict[str, str]


def load_rates(results_dir: str = RESULTS_DIR) -> Rates:
    e2e = _read(results_dir, "e2e.json")
    runs = [v for k, v in e2e.items() if isinstance(v, dict) and "stages" in v and str(v.get("master", "")).startswith("local")]
    if not runs:
        raise UserError(f"{results_dir}/e2e.json has no local end-to-end run: run `{WRITTEN_BY['e2e.json']}`")
    cpu, used = {}, {}
    for stage in CPU_STAGES:  # each stage's rate from the largest local run that has it (of equal runs, the fastest: other load only slows a stage)
        have = [(r["pairs"], r["cores"], s["rows_per_s_per_core"]) for r in runs for s in r["stages"]
                if s["stage"] == stage and s.get("rows_per_s_per_core")]
        if not have:
            raise UserError(f"{results_dir}/e2e.json: no local run has stage {stage!r}: run `{WRITTEN_BY['e2e.json']}`")
        pairs, cores, cpu[stage] = max(have)
        used[stage] = f"{stage} {pairs:,} pairs"
    real = e2e.get("real_archive_yield")
    if not real:
        raise UserError(f"{results_dir}/e2e.json has no real_archive_yield: run `python -m bench.e2e --real-yield`")
    web = _read(results_dir, "download.json").get("web") or {}
    ours = (web.get("ours") or {}).get("all")
    if not ours:
        raise UserError(f"{results_dir}/download.json has no web run: run `python -m bench download --sets web`")
    cpus = (_read(results_dir, "download.json").get("machine") or {}).get("cpus") or web["params"]["processes"]
    score, train = _read(results_dir, "score_gpu.json"), _read(results_dir, "train_gpu.json")
    score_rates = {score["model"]: score["end_to_end_gpu_preprocess_decode_pairs_per_s"]}
    if os.path.exists(os.path.join(results_dir, "score_gpu_vit_l14.json")):
        d = _read(results_dir, "score_gpu_vit_l14.json")
        score_rates[d["model"]] = d["end_to_end_gpu_preprocess_decode_pairs_per_s"]
    elif score["model"] == "ViT-B-32" and "model_only_pairs_per_s" in score:  # compute-bound: scale by FLOPs
        score_rates["ViT-L-14 (FLOPs-scaled, not measured)"] = score["model_only_pairs_per_s"] / L14_OVER_B32_FLOPS
    return Rates(
        cpu_rows_per_s_per_core=cpu,
        download_images_per_s_per_core=ours["images_per_s"] / cpus,
        pairs_per_page=real["pairs_trimmed"] / real["pages_trimmed"],
        score_pairs_per_s=score_rates,
        train_samples_per_s={train["model"]: train["ours"]["samples_per_s"]},
        gpu=score.get("gpu", "GPU"),
        sources={"cpu": "e2e.json local runs (" + ", ".join(used.values()) + ")",
                 "download": f"download.json web: {ours['images_per_s']} images/s on {cpus} CPUs, "
                             f"{web['hosts']} hosts with faults",
                 "pairs_per_page": f"e2e.json real_archive_yield: {real['pairs_trimmed']} pairs on "
                                   f"{real['pages_trimmed']} real pages",
                 "gpu": f"score_gpu.json / train_gpu.json ({score.get('gpu')})"},
    )


@dataclass
class Assumptions:
    """What is not measured here; docs/scaling.md gives each default's source."""

    top_fraction: float = 0.3  # select.top_fraction: the config default, DataComp-1B's CLIP-score top 30%
    download_success: float = 0.85  # LAION-400M: 95% at release, 87% eight months later (img2dataset #277)
    curation_keep: float = 0.1  # filter+match+balance, of extracted candidates: not measurable on simulated captions
    image_kb: float = 150.0  # mean original image fetched: img2dataset's 1,300 samples/s fill 2 Gbit/s at ≤190 KB
    shard_kb: float = 25.0  # stored sample at 256 px: img2dataset's LAION-400M is 10 TB
    node_gbit: float = 2.0  # download bandwidth per node (img2dataset's LAION-400M machine)
    epochs: float = 32.0  # CLIP's schedule on 400M pairs: 12.8B samples seen


def plan(pairs: int, nodes: int, cores: int, rates: Rates, a: Assumptions | None = None, gpus: int = 8) -> dict:
    """Counts, hours per stage on ``nodes``×``cores``, bandwidth, storage and GPU-hours for ``pairs`` final pairs."""
    a = a or Assumptions()
    if min(pairs, nodes, cores, gpus) < 1:
        raise UserError("--pairs, --nodes, --cores and --gpus must be at least 1")
    scored = pairs / a.top_fraction
    attempted = scored / a.download_success
    candidates = attempted / a.curation_keep
    wat_files = math.ceil(candidates / (PAGES_PER_WAT * rates.pairs_per_page))
    total_cores = nodes * cores
    # extract … balance read at most every candidate (an upper bound); select reads the scored shards
    rows_in = {s: candidates for s in CPU_STAGES} | {"select": scored}
    hours = {s: rows_in[s] / (rates.cpu_rows_per_s_per_core[s] * total_cores) / 3600 for s in CPU_STAGES}
    cpu_bound = attempted / (rates.download_images_per_s_per_core * total_cores) / 3600
    link_bound = attempted * a.image_kb * 8e3 / (a.node_gbit * 1e9 * nodes) / 3600
    hours["download"] = max(cpu_bound, link_bound)
    gpu_hours = {f"score {m}": scored / r / 3600 for m, r in rates.score_pairs_per_s.items()}
    gpu_hours.update({f"train {m} ({a.epochs:g} epochs)": pairs * a.epochs / r / 3600
                      for m, r in rates.train_samples_per_s.items()})
    return {"pairs": pairs, "nodes": nodes, "cores": cores, "gpus": gpus, "scored": scored, "download_attempts": attempted,
            "candidates": candidates, "wat_files": wat_files, "cpu_hours_wall": hours,
            "download_bound": "bandwidth" if link_bound >= cpu_bound else "CPU", "fetched_tb": attempted * a.image_kb / 1e9,
            "shards_tb": scored * a.shard_kb / 1e9, "final_tb": pairs * a.shard_kb / 1e9,
            "gpu_hours": gpu_hours, "gpu_wall_hours": {k: v / gpus for k, v in gpu_hours.items()},
            "gpu": rates.gpu, "sources": rates.sources, "assumptions": vars(a)}


def _n(x: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:,.1f}{unit}"
    return f"{x:,.0f}"


def format_plan(p: dict) -> str:
    lines = [f"Plan: {_n(p['pairs'])} final pairs on {p['nodes']} node(s) × {p['cores']} cores, {p['gpus']} GPU(s) "
             f"({p['gpu']} rates)",
             f"  WAT files to read        {p['wat_files']:,}  ({_n(p['candidates'])} candidate pairs)",
             f"  downloads attempted      {_n(p['download_attempts'])}  → scored {_n(p['scored'])} → kept {_n(p['pairs'])}",
             "  wall hours per CPU stage (all nodes together; an upper bound: the e2e rates include each stage's "
             "fixed start-up cost):"]
    lines += [f"    {s:9s} {h:10.1f} h" for s, h in p["cpu_hours_wall"].items()]
    lines += [f"    {'total':9s} {sum(p['cpu_hours_wall'].values()):10.1f} h"]
    lines += [f"  download                 {p['download_bound']}-bound at {p['assumptions']['node_gbit']:g} Gbit/s "
              f"per node, {p['fetched_tb']:.1f} TB fetched",
              f"  storage                  shards {p['shards_tb']:.1f} TB, final {p['final_tb']:.1f} TB",
              "  GPU-hours (wall hours on the GPUs given):"]
    lines += [f"    {k:46s} {h:10.0f} GPU-h ({p['gpu_wall_hours'][k]:.1f} h)" for k, h in p["gpu_hours"].items()]
    lines += ["  from: " + "; ".join(p["sources"].values()),
              "  assumed: " + ", ".join(f"{k}={v:g}" for k, v in p["assumptions"].items()) + " (docs/scaling.md)"]
    return "\n".join(lines)


def register(sub, common) -> None:
    p = sub.add_parser(
        "plan", parents=[common], help="estimate what a build of N pairs needs on a cluster (from measured rates)",
        description="Print the WAT files, hours per stage, download bandwidth, storage and GPU-hours that a build "
                    "of --pairs final pairs needs on --nodes machines of --cores cores, from the rates recorded in "
                    "bench/results/ (docs/scaling.md explains each input).")
    p.add_argument("--pairs", type=float, required=True, help="final pairs wanted, e.g. 400e6")
    p.add_argument("--nodes", type=int, default=1, help="CPU machines")
    p.add_argument("--cores", type=int, default=16, help="cores per machine")
    p.add_argument("--gpus", type=int, default=8, help="GPUs for scoring and training")
    p.add_argument("--results", default=RESULTS_DIR, metavar="DIR", help="folder of the bench results files")
    d = Assumptions()
    for name in vars(d):
        p.add_argument(f"--{name.replace('_', '-')}", dest=f"plan_{name}", type=float, default=getattr(d, name),
                       metavar=name.upper(),
                       help=f"assumption (default {getattr(d, name):g}; docs/scaling.md)")

    def command(args, cfg) -> int:
        a = Assumptions(**{k: getattr(args, f"plan_{k}") for k in vars(d)})
        print(format_plan(plan(int(args.pairs), args.nodes, args.cores, load_rates(args.results), a, args.gpus)))
        return 0

    p.set_defaults(func=command)
