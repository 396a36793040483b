"""The `wit` command: one subcommand per stage, plus `wit run` (all of them) and `wit demo`.

The stages' subcommands come from the one stage table (pipeline/registry.py, filled by each stage's
``@stage`` decorator): name, help, input/output arguments and options, in data-flow order. This file
turns that table into argparse, loads the run config and turns user errors into one clear line.
Heavy imports (Spark, torch) happen inside the commands, so ``wit --help`` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from pipeline import registry
from pipeline.config import RunConfig, load_config
from pipeline.errors import UserError
from pipeline.registry import Flag, StageSpec, flag  # flag: also for the modules that add their own subcommand

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
  plan           what a build of N pairs needs on a cluster, from measured rates
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


def stage_command(sub, common: argparse.ArgumentParser, run: Callable[..., dict], *, help: str, description: str,
                  input_help: str | None, output_help: str, positional_input: str | None = None,
                  options: tuple[str, ...] = (), show: Callable[[dict], str] | None = None) -> argparse.ArgumentParser:
    """The subcommand of a stage function made by ``pipeline.stage.stage``, for a stage module that still
    adds its own (``register(sub, common)``); a stage's ``@stage(..., order=...)`` options need none. Its
    input/output/overwrite arguments are spelled as every stage's; ``options``: the parsed arguments passed
    through as the stage's own keyword options. ``positional_input``: "?" or "*" to take the input as
    positionals too."""
    spec = StageSpec(run.stage_name, 0, run, help=help, description=description, input_help=input_help,
                     output_help=output_help, positional=positional_input, show=show)
    p = sub.add_parser(spec.command, parents=[common], help=help, description=description)
    return _stage_arguments(p, spec, options)


def _stage_arguments(p: argparse.ArgumentParser, spec: StageSpec, passed: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """Every stage's arguments: ``--input`` (repeatable for many-input stages) and positionals where the
    stage takes them, ``--output``, ``--overwrite``, then its own options; the command that runs it."""
    if spec.input_help:
        many = spec.positional == "*"
        p.add_argument("--input", dest="input_opt", metavar="PATH", action="append" if many else "store",
                       help=spec.input_help + ("; repeatable" if many else ""))
        if spec.positional:
            p.add_argument("input", nargs=spec.positional, metavar="INPUT", help="same as --input")
    p.add_argument("--output", metavar="PATH", help=spec.output_help)
    p.add_argument("--overwrite", action="store_true", help="redo a complete output")
    groups: dict[str, Any] = {}
    for o in spec.options:
        if o.group is not None and o.group not in groups:
            groups[o.group] = p.add_mutually_exclusive_group()
        target = p if o.group is None else groups[o.group]
        if isinstance(o, Flag):
            flag(target, *o.names, key=o.key, **o.kw)
        else:
            target.add_argument(*o.names, **{"dest": o.dest, **o.kw})
    passed = (*passed, *(o.dest for o in spec.options if not isinstance(o, Flag)))

    def command(args: argparse.Namespace, cfg: RunConfig) -> int:
        from pipeline.stats import summary_line

        d = spec.run(cfg, input=_given_input(args), output=args.output, overwrite=args.overwrite,
                     **{o: getattr(args, o) for o in passed})
        if d:
            print((spec.show or summary_line)(d))
        return 0

    p.set_defaults(func=command)
    return p


def _given_input(args: argparse.Namespace) -> Any:
    """The input from the positionals and/or ``--input``: a list for many-input stages, else one path."""
    pos, opt = getattr(args, "input", None), getattr(args, "input_opt", None)
    if isinstance(pos, list) or isinstance(opt, list):
        return [*(pos or []), *(opt or [])] or None
    if pos and opt:
        raise UserError(f"give the input once: as INPUT ({pos}) or with --input ({opt})")
    return pos or opt or None


def add_stage(sub, common: argparse.ArgumentParser, spec: StageSpec, groups: dict) -> None:
    """The subcommand of one row of the stage table (``queries build``: a word under a group)."""
    *group, word = spec.command.split()
    if group:
        if group[0] not in groups:
            g = sub.add_parser(group[0], help=spec.help, description=f"`wit {group[0]} ACTION`: {spec.help}.")
            groups[group[0]] = g.add_subparsers(dest=f"{group[0]}_command", metavar="ACTION", title="actions",
                                                required=True)
        sub = groups[group[0]]
    _stage_arguments(sub.add_parser(word, parents=[common], help=spec.help, description=spec.description), spec)


def _own_register(spec: StageSpec) -> Callable | None:
    """A stage module's own ``register(sub, common)`` (its module's, or its package's), where it still
    adds its subcommand itself."""
    module = spec.run.__module__
    while module.count("."):
        fn = getattr(sys.modules.get(module), "register", None)
        if callable(fn) and fn.__module__.startswith(module) and fn.__module__ != registry.__name__:
            return fn
        module = module.rpartition(".")[0]
    return None


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


JOB_EPILOG = ("Under spark-submit the stage comes first: spark-submit jobs/wit.py STAGE --config YAML [--set KEY=VALUE] "
              "[--output-dir DIR] [options of `wit STAGE`] (spark-submit jobs/wit.py STAGE --help lists them).")


def build_parser(prog: str = "wit", epilog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from pipeline import __version__, plan, run, sample_web

    parser.add_argument("--version", action="version", version=f"wit-builder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    common = common_parser()
    sample_web.register(sub, common)  # sample, serve: the sample web, not stages
    groups: dict = {}
    for spec in registry.stages():
        own = _own_register(spec)
        if own:
            own(sub, common)
        else:
            add_stage(sub, common, spec, groups)
    run.register(sub, common)  # run, demo
    plan.register(sub, common)  # plan: a capacity estimate, not a stage
    return parser


def main(argv: list[str] | None = None, prog: str = "wit", epilog: str | None = None) -> int:
    parser = build_parser(prog, epilog)
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


def job_main(command: str | None = None, argv: list[str] | None = None) -> int:
    """The spark-submit entry point (``jobs/``): ``wit <command>`` under spark-submit, where spark-submit's
    --master and --conf win over the run config's. ``command``: the stage (or ``run``); None takes it from
    the first argument (``jobs/wit.py STAGE …``). The stage's ``job_defaults`` go before the user's
    arguments (so the user's own --set wins), e.g. score's ``--set score.mode=spark``."""
    from pipeline import spark

    spark.SUBMITTED = True
    argv = sys.argv[1:] if argv is None else list(argv)
    script = os.path.basename(sys.argv[0]) or "wit.py"
    if command is None:
        if not argv or argv[0].startswith("-"):
            return main(argv, prog=f"spark-submit jobs/{script}", epilog=JOB_EPILOG)
        command, argv = argv[0], argv[1:]
    spec = {s.name: s for s in registry.stages()}.get(command)  # None: run (not a stage)
    words = spec.command.split() if spec else command.split()
    return main([*words, *(spec.job_defaults if spec else ()), *argv], prog=f"spark-submit jobs/{script}")


if __name__ == "__main__":
    sys.exit(main())
