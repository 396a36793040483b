"""The `wit` command: one subcommand per stage, plus `wit run` (all of them) and `wit demo`.

Each stage module registers its own subcommand through ``register(subparsers, common)``; this file
only wires them together, loads the run config and turns user errors into one clear line.
Heavy imports (Spark, torch) happen inside the commands, so ``wit --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import Any

from pipeline.config import RunConfig, load_config
from pipeline.errors import UserError

# Modules that add subcommands, in the order `wit --help` lists them (the data flow's order).
COMMAND_MODULES = [
    "pipeline.sample_web",  # sample, serve
    "pipeline.extract",  # extract
    "pipeline.caption_filter",  # filter
    "pipeline.queries",  # queries build
    "pipeline.balance",  # match, balance
    "pipeline.download",  # download
    "pipeline.score",  # score
    "pipeline.select",  # select
    "pipeline.train",  # train
    "pipeline.evaluate",  # eval
    "pipeline.report",  # report
    "pipeline.run",  # run, demo
]

DESCRIPTION = """\
WIT builder: build a CLIP-style image-text training set from web archives.

Data flow (each stage reads the previous one's output under --output-dir):
  sample/serve   make and serve the built-in sample web (WARC/WAT + images + faults)
  extract        WARC/WAT files or URL lists -> candidate (image URL, text) pairs
  filter         caption filters: URL safety, text rules, language, dedup
  queries        build the ~500k query list (WordNet, Wikipedia words, bigrams, titles)
  match/balance  keep texts containing a query; cap each query at t pairs (MetaCLIP)
  download       fetch and resize images into webdataset shards (safe fetcher)
  score/select   CLIP-score every pair, keep the best, write final training shards
  train/eval     train a small CLIP on the result; zero-shot and retrieval evaluation
  report         one self-contained HTML page of the whole run
  run / demo     all stages in order / the whole thing on the built-in sample
"""


def common_parser() -> argparse.ArgumentParser:
    """Options every stage takes: the run config, overrides, the Spark master, the output folder."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("run config")
    g.add_argument("--config", "-c", metavar="YAML", help="run config file (see README: Configuration)")
    g.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set download.threads=16 (repeatable)",
    )
    g.add_argument("--output-dir", "-o", dest="ov__output_dir", metavar="DIR", help="root folder of all outputs (config output_dir)")
    g.add_argument("--master", dest="ov__spark__master", metavar="URL", help="Spark master, e.g. local[2] or spark://host:7077")
    return p


def job_parser(script: str, description: str | None = None) -> argparse.ArgumentParser:
    """The parser of a jobs/*.py spark-submit entry point: the common options plus --help."""
    return argparse.ArgumentParser(prog=f"spark-submit jobs/{script}", parents=[common_parser()], description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def flag(parser: argparse.ArgumentParser, *names: str, key: str, **kw: Any) -> None:
    """Add a per-stage flag that overrides config key ``key`` (e.g. ``--threads`` → download.threads)."""
    kw.setdefault("help", f"config {key}")
    parser.add_argument(*names, dest="ov__" + key.replace(".", "__"), default=None, **kw)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    overrides: dict[str, Any] = {}
    for item in args.overrides:
        from pipeline.config import parse_override

        k, v = parse_override(item)
        overrides[k] = v
    for name, value in vars(args).items():
        if name.startswith("ov__") and value is not None:
            overrides[name[4:].replace("__", ".")] = value
    cfg = load_config(args.config, overrides)
    from pipeline import storage

    storage.configure(cfg.storage)  # object-store endpoint/credentials for s3fs, Spark and its workers
    return cfg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wit", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    from pipeline import __version__

    parser.add_argument("--version", action="version", version=f"wit-builder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    common = common_parser()
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace, RunConfig], int | None] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        cfg = config_from_args(args)
        rc = func(args, cfg)
        return int(rc or 0)
    except UserError as e:
        print(f"wit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("wit: interrupted", file=sys.stderr)
        return 130


def run_job(job_main: Callable[[], int | None]) -> int:
    """Run a jobs/*.py entry point with the CLI's error handling (one line, exit 2, no traceback)."""
    try:
        return int(job_main() or 0)
    except UserError as e:
        print(f"wit job: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
