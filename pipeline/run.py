"""`wit run` (every stage in order, resumable) and `wit demo` (the whole thing on the sample web).

A stage is skipped when its output is already complete (its ``_SUCCESS`` marker), so a run killed
at any moment is resumed by running the same command again. `--from`, `--to` and `--only` choose
stages. The same code runs on ``local[*]`` and on a cluster (``--master`` or spark-submit).
"""

from __future__ import annotations

import math
import time

from pipeline import log, registry, storage
from pipeline.config import RunConfig, join_path
from pipeline.errors import UserError
from pipeline.registry import StageSpec
from pipeline.stats import summary_line


def stage_names() -> list[str]:
    """The stages `wit run` runs, in data-flow order (the stage table's, pipeline/registry.py)."""
    return [s.name for s in registry.stages(in_run=True)]


def choose_stages(from_: str | None = None, to: str | None = None, only: list[str] | None = None) -> list[StageSpec]:
    stages = registry.stages(in_run=True)
    names = [s.name for s in stages]
    for name in [from_, to, *(only or [])]:
        if name is not None and name not in names:
            raise UserError(f"unknown stage {name!r}; stages: {', '.join(names)}")
    if only:
        return [s for s in stages if s.name in only]
    lo = names.index(from_) if from_ else 0
    hi = names.index(to) if to else len(stages) - 1
    if lo > hi:
        raise UserError(f"--from {from_} comes after --to {to}")
    return stages[lo : hi + 1]


def _has_input(spec: StageSpec, cfg: RunConfig) -> bool:
    """False for a stage whose default input is empty in this config (crawl without crawl.seeds): it
    has nothing to read, and `wit run` leaves it out."""
    rule = spec.input_rule
    return not callable(rule) or bool(rule(cfg))


def run_pipeline(cfg: RunConfig, stages: list[StageSpec] | None = None, spark=None) -> list[dict]:
    """Run the chosen stages in order, each on its default input and output; each skips itself when
    already complete. Returns their stats."""
    stages = [s for s in (stages or registry.stages(in_run=True)) if _has_input(s, cfg)]
    storage.write_json(join_path(cfg.output_dir, "run_config.json"), cfg.model_dump(mode="json"))
    if spark is None and any(s.spark for s in stages):
        from pipeline.spark import get_spark

        # A run is long: its Spark UI is on unless the config says otherwise (single stages keep it off).
        spark = get_spark(cfg.spark.model_copy(update={"conf": {"spark.ui.enabled": "true", **cfg.spark.conf}}))
    if spark is not None:
        from pipeline.spark import ui_line

        log.info(ui_line(spark))
    results = []
    t0 = time.perf_counter()
    for i, stage in enumerate(stages, 1):
        log.info(f"[{i}/{len(stages)}] {stage.name} …")
        t = time.perf_counter()
        stats = stage.run(cfg, spark) or {}
        stats.setdefault("stage", stage.name)
        stats.setdefault("duration_s", time.perf_counter() - t)
        results.append(stats)
        log.info(_line(stats))
    log.info(f"run: {len(stages)} stage(s) done in {time.perf_counter() - t0:.0f}s; outputs under {cfg.output_dir}")
    return results


def _line(stats: dict) -> str:
    if "input_rows" in stats or "drops" in stats:
        stats = {"input_rows": None, "output_rows": None, "drops": {}, **stats}
        return summary_line(stats)
    return f"[{stats.get('stage')}] done in {stats.get('duration_s', 0):.1f}s"


# --- the demo -------------------------------------------------------------------------------------


def run_demo(cfg: RunConfig) -> dict:
    """Sample web → serve → queries → the whole pipeline → two small CLIPs → report.

    Shows whether curation works: model A trains on everything downloaded and scores the pairs;
    the pairs above the valley of the score histogram (select.threshold_rule valley) then train
    model B for the same steps (DEMO_EPOCHS passes over the unfiltered pool); both are evaluated
    zero-shot on the sample web's held-out labelled splits (shapes, the headline; background
    colours) and by retrieval of the shapes split's captions, and the verdict compares them one by one.
    """
    from pipeline.sample_web import SampleWebServer, generate_sample_web

    t_start = time.perf_counter()
    sample_dir = cfg.path("sample")
    port = cfg.serve.port or _free_port(cfg.serve.host)
    cfg = _demo_config(cfg, f"http://{cfg.serve.host}:{port}")
    if not _sample_matches(sample_dir, cfg):
        log.info(f"demo: generating the sample web ({cfg.sample.n_pairs} pairs) for {cfg.sample.base_url}")
        for stale in [sample_dir] + [cfg.path(s) for s in DEMO_DERIVED]:  # their URLs name the old address
            storage.remove(stale)
        generate_sample_web(sample_dir, n_pairs=cfg.sample.n_pairs, seed=cfg.sample.seed, base_url=cfg.sample.base_url,
                            eval_per_class=50)  # 400 labelled images: less noise in the zero-shot comparison
    server = SampleWebServer(join_path(sample_dir, "site"), host=cfg.serve.host, port=port).start()  # busy port: UserError
    try:
        from pipeline.spark import get_spark

        spark = get_spark(cfg.spark)
        run_pipeline(cfg, choose_stages("crawl", "download"), spark=spark)
    finally:
        server.stop()
    curation = _curation_experiment(cfg, spark)
    report = registry.get("report").run(cfg, spark)
    elapsed = time.perf_counter() - t_start
    log.info(f"demo: done in {elapsed / 60:.1f} min")
    lead = curation.get("measured_removal")
    print("\n" + (f"{lead}\n" if lead else "") + f"{curation['verdict']}\nReport: {report['path']}")
    return {"report": report["path"], "curation": curation, "minutes": elapsed / 60}


# Demo outputs derived from the sample web's URLs: stale once the sample is regenerated for another port.
DEMO_DERIVED = ["crawl", "candidates", "filtered", "dropped", "matched", "balanced", "shards", "scores", "final", "train", "report.html"]


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _demo_config(cfg: RunConfig, base_url: str) -> RunConfig:
    """The demo's settings: serve on loopback (allowed explicitly), offline query list, small shards.
    A setting the user gave (config file, --set, a flag) is kept even when it equals the default: only
    the fields left unset are the demo's to choose (pydantic's fields set survive the rebuild)."""
    host = base_url.split("://", 1)[1]
    data = cfg.model_dump(exclude_unset=True)

    def unset(section: str, key: str) -> bool:
        return key not in getattr(cfg, section).model_fields_set

    def put(section: str, key: str, value) -> None:
        data.setdefault(section, {})[key] = value

    put("sample", "base_url", base_url)
    if cfg.sample.crawl and not cfg.crawl.seeds:  # our own polite crawl of the served web, into WARC
        put("crawl", "seeds", [f"{base_url}/"])
        for key, value in (("max_depth", 1), ("min_interval_s", 0.0), ("max_crawl_delay_s", 0.0),
                           ("max_pages_per_host", max(cfg.crawl.max_pages_per_host, 5000))):
            put("crawl", key, value)
    elif not cfg.crawl.seeds:
        put("extract", "inputs", cfg.extract.inputs or [join_path(cfg.path("sample"), "crawl.warc.gz")])
    put("download", "allow_hosts", sorted(set(cfg.download.allow_hosts) | {host}))
    if unset("download", "shard_size"):
        put("download", "shard_size", 500)
    if not cfg.select.decontaminate:  # the labelled splits the demo evaluates on must not leak into training
        put("select", "decontaminate", [join_path(cfg.path("sample"), split) for split in ("eval", "eval_background")])
    if cfg.select.threshold is None and unset("select", "threshold_rule"):
        put("select", "threshold_rule", "valley")  # the cut a user reads off the score histogram
    if unset("select", "shard_size"):
        put("select", "shard_size", 500)
    if not cfg.queries.wikipedia and not cfg.queries.path:
        import os

        wordnet = ["wordnet"] if os.path.isdir(cfg.queries.wordnet_dir) else []
        put("queries", "sources", wordnet + ["wordfreq"])
    if unset("balance", "t") and cfg.balance.tail_share is None:
        put("balance", "t", 150)  # small enough that the head entries (shapes, colours) get capped
    if unset("download", "timeout_s"):
        put("download", "timeout_s", 5.0)
    return RunConfig.model_validate(data)


def _sample_matches(sample_dir: str, cfg: RunConfig) -> bool:
    from pipeline.sample_web.generate import sample_is_complete

    return sample_is_complete(sample_dir, cfg.sample.n_pairs, cfg.sample.seed, cfg.sample.base_url)


def _curation_experiment(cfg: RunConfig, spark) -> dict:
    """Train A on everything, score with A, select (the valley rule in the demo), train B on the
    kept pairs for the same steps; compare them on every labelled split and by retrieval."""
    from pipeline import fidelity
    from pipeline import score as score_mod
    from pipeline import select as select_mod
    from pipeline import train as train_mod
    from pipeline.checkpoint import checkpoint_path
    from pipeline.stats import read_stats

    unfiltered_dir = join_path(cfg.path("train"), "unfiltered")
    filtered_dir = join_path(cfg.path("train"), "filtered")
    cfg = _with_demo_steps(cfg, read_stats(cfg.path("shards")))
    log.info(f"demo: training model A on every downloaded pair for {cfg.train.steps} steps (the unfiltered baseline "
             "and the scoring model)")
    a = train_mod.run_train(cfg, spark, input=cfg.path("shards"), output=unfiltered_dir)
    ckpt = checkpoint_path(unfiltered_dir)
    scfg = cfg.model_copy(deep=True)
    scfg.score.model = cfg.train.model
    scfg.score.pretrained = ckpt
    log.info("demo: scoring every pair with model A")
    score_mod.run_score(scfg, spark)
    select_mod.run_select(scfg, spark)
    selection = _selection(read_stats(cfg.path("final")))
    log.info(f"demo: training model B on the {selection['kept']} CLIP-filtered pairs for the same number of steps")
    b = train_mod.run_train(cfg, spark, input=cfg.path("final"), output=filtered_dir)
    (top1_a, r1_a, n), (top1_b, r1_b, _) = _metrics(a), _metrics(b)
    splits = split_results(a, b)
    measured = fidelity.measure(scfg)  # scfg: the scores and selection graded are model A's
    result = {"unfiltered_top1": top1_a, "filtered_top1": top1_b, "unfiltered_i2t_R@1": r1_a,
              "filtered_i2t_R@1": r1_b, "eval_images": n, "splits": splits, "selection": selection,
              "steps": cfg.train.steps, "verdict": curation_verdict(splits, selection, cfg.train.steps),
              "fidelity": measured, "measured_removal": fidelity.headline(measured, read_stats(cfg.path("final")))}
    storage.write_json(join_path(cfg.path("train"), "curation.json"), result)
    return result


# Samples both demo models see: DEMO_EPOCHS passes over the downloaded (unfiltered) pool. DataComp fixes the
# samples seen at one pass over its unfiltered pool; a model this small needs a few to learn anything. Many more
# repeat the filtered half so often that model B memorises it (at 10 passes, 320 steps: B's loss 0.5 vs A's 2.5,
# and B no better on any split): filtering's gain shrinks with repetition (Goyal et al., CVPR 2024, "Scaling Laws
# for Data Filtering: Data Curation cannot be Compute Agnostic").
DEMO_EPOCHS = 3


def _with_demo_steps(cfg: RunConfig, shards_stats: dict | None) -> RunConfig:
    """The demo's training steps, unless train.steps was set (even to its default): DEMO_EPOCHS passes
    over the pairs downloaded."""
    pairs = (shards_stats or {}).get("output_rows") or 0
    if "steps" in cfg.train.model_fields_set or not pairs:
        return cfg
    out = cfg.model_copy(deep=True)
    out.train.steps = max(1, math.ceil(DEMO_EPOCHS * pairs / cfg.train.batch_size))
    return out


# What each labelled split of the sample web labels (pipeline/sample_web/labelled.py LABELLED_SPLITS).
SPLIT_NAMES = {"eval": "shapes", "eval_background": "background colours",
               "retrieval": "retrieval of the shapes split's held-out captions"}


def _selection(stats: dict | None) -> dict:
    """Model B's training set as select chose it: pairs kept of the downloaded and scored ones, and
    the CLIP cut's rule and value."""
    stats = stats or {}
    extra = stats.get("extra") or {}
    valley = extra.get("valley") or {}
    if extra.get("threshold") is not None:
        rule = f"clip_score >= {extra['threshold']:.3f} (select.threshold)"
    elif valley.get("found"):
        rule = (f"clip_score >= {valley['threshold']:.3f}, the valley between the score histogram's modes at "
                f"{valley['modes'][0]:.3f} and {valley['modes'][1]:.3f}")
    else:
        f = extra.get("top_fraction")
        rule = f"the top {f:.0%} of scores" if f is not None and extra.get("cutoff") is not None else "every scored pair"
        if valley:
            rule += f" (no valley in the score histogram: {valley['reason']})"
    drops = stats.get("drops") or {}
    scored = (stats.get("input_rows") or 0) - drops.get("not_downloaded", 0) - drops.get("score_error", 0)
    return {"kept": stats.get("output_rows"), "pairs": scored, "rule": rule,
            "cutoff": extra.get("cutoff"), "valley": valley or None}


def split_results(a: dict, b: dict) -> dict[str, dict]:
    """Models A (unfiltered) and B (filtered) on each labelled split: zero-shot top-1 per split, and
    image→text R@1 on the held-out (image, caption) pairs as ``retrieval``; each with its noise (two
    standard errors of the difference of two proportions over n images) and the outcome."""
    za, zb = (((s or {}).get("eval") or {}).get("zeroshot_splits") or {} for s in (a, b))
    out = {}
    for name in za:
        if name in zb and za[name].get("top1") is not None and zb[name].get("top1") is not None:
            out[name] = _compare("zero-shot top-1", za[name]["top1"], zb[name]["top1"], za[name]["chance_top1"],
                                 za[name]["n_images"])
    ra, rb = (((s or {}).get("eval") or {}).get("retrieval") or {} for s in (a, b))
    key = "image_to_text_R@1"
    if isinstance(ra.get(key), (int, float)) and isinstance(rb.get(key), (int, float)) and ra.get("n_texts"):
        out["retrieval"] = _compare("image→text R@1", ra[key], rb[key], 1 / ra["n_texts"], ra["n_images"])
    return out


def _compare(metric: str, ta: float, tb: float, chance: float, n: int) -> dict:
    noise = 2 * math.sqrt((ta * (1 - ta) + tb * (1 - tb)) / max(n, 1))
    diff = tb - ta
    outcome = ("better" if diff > noise else "worse" if -diff > noise
               else "higher within noise" if diff > 0 else "lower within noise" if diff < 0 else "equal")
    return {"metric": metric, "unfiltered": ta, "filtered": tb, "chance": chance, "n_images": n, "noise": noise,
            "outcome": outcome}


def curation_verdict(splits: dict[str, dict], selection: dict | None = None, steps: int | None = None) -> str:
    """The demo's closing verdict: per evaluation (each labelled split's zero-shot top-1, retrieval on
    the held-out pairs), filtered vs unfiltered with its noise band; "hurt" when filtering is worse
    beyond noise on any, "works" when it is better beyond noise on one and worse on none, else "no
    clear difference"."""
    if not splits:
        return "Curation check: evaluation results missing (no labelled eval split?)."
    worse = [k for k, v in splits.items() if v["outcome"] == "worse"]
    better = [k for k, v in splits.items() if v["outcome"] == "better"]
    lower = [k for k, v in splits.items() if v["outcome"] == "lower within noise"]
    named = lambda ks: ", ".join(SPLIT_NAMES.get(k, k) for k in ks)  # noqa: E731
    if worse:
        head = f"Curation hurt: the filtered model is worse beyond noise on {named(worse)}."
    elif better:
        head = f"Curation works: the filtered model is better beyond noise on {named(better)}, and worse on none."
    else:
        head = "Curation made no clear difference: every gap is within the evaluation's noise."
    if lower:
        head += f" It is lower, within noise, on {named(lower)}."
    lines = [f"{SPLIT_NAMES.get(k, k)} ({k}, {v['n_images']} images), {v['metric']}: {v['filtered']:.3f} filtered vs "
             f"{v['unfiltered']:.3f} unfiltered (±{v['noise']:.3f} noise, chance {v['chance']:.3f}): {v['outcome']}"
             for k, v in splits.items()]
    same = f"same {steps} steps" if steps else "same steps"
    out = f"{head} Same model, {same}: " + "; ".join(lines) + "."
    if selection and selection.get("kept") is not None:
        out += f" Model B trained on {selection['kept']:,} of {selection['pairs']:,} pairs: {selection['rule']}."
    return out


def _metrics(summary: dict) -> tuple[float | None, float | None, int | None]:
    """(zero-shot top-1, image→text R@1, zero-shot images) from a training summary."""
    ev = (summary or {}).get("eval") or {}
    zs = ev.get("zeroshot") or {}
    r1 = (ev.get("retrieval") or {}).get("image_to_text_R@1")
    as_float = lambda v: float(v) if isinstance(v, (int, float)) else None  # noqa: E731
    return as_float(zs.get("top1")), as_float(r1), zs.get("n_images")


# --- CLI --------------------------------------------------------------------------------------------


def register(sub, common) -> None:
    names = stage_names()
    p = sub.add_parser(
        "run", parents=[common], help="run every stage in order (resumable)",
        description=f"Run {' → '.join(names)} (crawl only with crawl.seeds), each skipping work already "
                    "complete. Rerun the same command after a crash.",
    )
    p.add_argument("--from", dest="from_", metavar="STAGE", choices=names, help="first stage to run")
    p.add_argument("--to", metavar="STAGE", choices=names, help="last stage to run")
    p.add_argument("--only", nargs="+", metavar="STAGE", choices=names, help="run just these stages")
    p.set_defaults(func=lambda args, cfg: run_pipeline(cfg, choose_stages(args.from_, args.to, args.only)) and 0)

    d = sub.add_parser(
        "demo", parents=[common], help="the whole pipeline on the built-in sample web",
        description="Generate the sample web, serve it on 127.0.0.1, build the offline query list, run every "
                    "stage, train two small CLIPs (unfiltered vs CLIP-filtered) and write the report.",
    )
    from pipeline.registry import flag

    flag(d, "--n-pairs", key="sample.n_pairs", type=int, help="pairs in the sample web (config sample.n_pairs)")
    flag(d, "--port", key="serve.port", type=int, help="port to serve the sample web on (0 = any free port)")
    flag(d, "--crawl", key="sample.crawl", action="store_const", const=True,
         help="start by crawling the served sample web into WARC (wit crawl) instead of reading its crawl.warc.gz")
    d.set_defaults(func=lambda args, cfg: run_demo(cfg) and 0)
