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
    "pipeline.crawl",  # crawl
    "pipeline.extract",  # extract
    "pipeline.filter",  # filter
    "pipeline.queries",  # queries build
    "pipeline.match",  # match
    "pipeline.balance",  # balance
    "pipeline.download",  # download
    "pipeline.score",  # score
    "pipeline.select",  # select
    "pipeline.train",  # train
    "pipeline.eval",  # eval
    "pipeline.report",  # report
    "pipeline.run",  # run, demo
]

DESCRIPTION = """\
WIT builder: build a CLIP-style image-text training set from web archives.

Data flow (each stage reads the previous one's output under --output-dir):
  sample/serve   make and serve the built-in sample web (WARC/WAT + images + faults)
  crawl          seed pages -> WARC files (polite, robots.txt, breadth-first rounds)
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


def flag(parser: argparse.ArgumentParser, *names: str, key: str, **kw: Any) -> None:
    """Add a per-stage flag that overrides config key ``key`` (e.g. ``--threads`` → download.threads)."""
    kw.setdefault("help", f"config {key}")
    if kw.get("action") in (None, "store", "append") and "choices" not in kw:
        kw.setdefault("metavar", key.rsplit(".", 1)[-1].upper())  # not the dest's OV__… spelling
    parser.add_argument(*names, dest="ov__" + key.replace(".", "__"), default=None, **kw)


def stage_command(sub, common: argparse.ArgumentParser, run: Callable[..., dict], *, help: str, description: str,
                  input_help: str | None, output_help: str, positional_input: str | None = None,
                  options: tuple[str, ...] = (), show: Callable[[dict], str] | None = None) -> argparse.ArgumentParser:
    """The subcommand of a stage function made by ``pipeline.stage.stage``: its input/output/overwrite
    arguments spelled the same for every stage; ``options`` names the parsed arguments passed through as
    the stage's own keyword options. ``positional_input``: "?" or "*" when the input is positional."""
    p = sub.add_parser(run.stage_name, parents=[common], help=help, description=description)
    if positional_input:
        p.add_argument("input", nargs=positional_input, metavar="INPUT", help=input_help)
    elif input_help:
        p.add_argument("--input", metavar="PATH", help=input_help)
    p.add_argument("--output", metavar="PATH", help=output_help)
    p.add_argument("--overwrite", action="store_true", help="redo a complete output")

    def command(args: argparse.Namespace, cfg: RunConfig) -> int:
        from pipeline.stats import summary_line

        given = getattr(args, "input", None)
        d = run(cfg, input=given or None, output=args.output, overwrite=args.overwrite,
                **{o: getattr(args, o) for o in options})
        if d:
            print((show or summary_line)(d))
        return 0

    p.set_defaults(func=command)
    return p


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


def build_parser(prog: str = "wit") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    from pipeline import __version__

    parser.add_argument("--version", action="version", version=f"wit-builder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    common = common_parser()
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, common)
    return parser


def main(argv: list[str] | None = None, prog: str = "wit") -> int:
    parser = build_parser(prog)
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
    except Exception as e:  # damaged data that no stage check caught: one line, not a traceback
        from pipeline.inputs import describe_damage

        if (line := describe_damage(e)) is None:
            raise
        print(f"wit: error: {line}", file=sys.stderr)
        return 2


def job_main(command: str, script: str, argv: list[str] | None = None, defaults: tuple[str, ...] = ()) -> int:
    """The one entry point of every jobs/*.py: ``wit <command>`` under spark-submit, where spark-submit's
    --master and --conf win over the run config's. ``defaults``: arguments placed before the user's (so the
    user's own --set wins), e.g. jobs/score.py's ``--set score.mode=spark``."""
    from pipeline import spark

    spark.SUBMITTED = True
    argv = sys.argv[1:] if argv is None else argv
    return main([*command.split(), *defaults, *argv], prog=f"spark-submit jobs/{script}")


if __name__ == "__main__":
    sys.exit(main())
