"""The stage registry: one table of every stage, filled by the ``@stage`` decorator (pipeline/stage.py).

The CLI (``wit <stage>``), ``wit run`` and the spark-submit entry points (``jobs/``) all read this
table: a stage's name, its place in the data flow (``order``), its command's help and options, and
its ``run_<stage>`` function. Adding a stage is one new module with a ``@stage(..., order=N)``
function (plus its tests): ``discover()`` finds every module of ``pipeline/`` that declares one, so
there is no list of stage modules to edit.

Options are data (``Flag``: overrides a config key; ``Option``: a keyword argument of the step), so
a stage module never imports the CLI; the CLI turns them into argparse arguments.
"""

from __future__ import annotations

import ast
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Flag:
    """A command-line flag that overrides config key ``key`` (``--threads`` → download.threads).
    ``group``: flags sharing a group name are mutually exclusive. Other keywords go to argparse."""

    def __init__(self, *names: str, key: str, group: str | None = None, **argparse_kw: Any):
        self.names, self.key, self.group, self.kw = names, key, group, argparse_kw


def flag(parser, *names: str, key: str, **kw: Any) -> None:
    """Add to an argparse parser a flag that overrides config key ``key`` (``--threads`` → download.threads)."""
    kw.setdefault("help", f"config {key}")
    if kw.get("action") in (None, "store", "append") and "choices" not in kw:
        kw.setdefault("metavar", key.rsplit(".", 1)[-1].upper())  # not the dest's OV__… spelling
    parser.add_argument(*names, dest="ov__" + key.replace(".", "__"), default=None, **kw)


class Option:
    """A command-line option passed to the step as the keyword argument of the same name
    (``--scores PATH`` → ``run_select(..., scores=PATH)``). Other keywords go to argparse."""

    def __init__(self, *names: str, group: str | None = None, **argparse_kw: Any):
        self.names, self.group, self.kw = names, group, argparse_kw
        self.dest = argparse_kw.get("dest") or names[0].lstrip("-").replace("-", "_")


@dataclass
class StageSpec:
    """One row of the table: what the CLI, ``wit run`` and ``jobs/`` need to know of a stage."""

    name: str
    order: int  # place in the data flow: ``wit run`` runs stages in this order, ``wit --help`` lists them so
    run: Callable[..., dict]  # run_<name>(cfg, spark=None, input=None, output=None, overwrite=False, **options)
    input_rule: Any = None  # the default input: a name under output_dir, a function of the config, or None
    command: str = ""  # the CLI words, default the name (``queries build``)
    help: str = ""
    description: str = ""
    input_help: str | None = None  # None: the stage reads no dataset (no --input)
    output_help: str = "output folder"
    positional: str | None = None  # also take the input as positionals: "?" (one) or "*" (many: extract, crawl)
    options: list[Flag | Option] = field(default_factory=list)
    show: Callable[[dict], str] | None = None  # how the CLI prints the result (default: the stats' summary line)
    in_run: bool = True  # part of ``wit run`` (eval is not: train already evaluates)
    spark: bool = True  # ``wit run`` starts a Spark session before the stages only when one of them needs it
    job_defaults: tuple[str, ...] = ()  # arguments jobs/ put before the user's, e.g. score's --set score.mode=spark

    def __post_init__(self):
        self.command = self.command or self.name


REGISTRY: dict[str, StageSpec] = {}


def register(spec: StageSpec) -> None:
    """Add a stage to the table (the ``@stage`` decorator does). A name registered twice from two
    different functions is a programming error, caught at import."""
    old = REGISTRY.get(spec.name)
    if old is not None and (old.run.__module__, old.run.__qualname__) != (spec.run.__module__, spec.run.__qualname__):
        raise ValueError(f"stage {spec.name!r} registered twice: {old.run.__module__} and {spec.run.__module__}")
    REGISTRY[spec.name] = spec


def stages(*, in_run: bool | None = None) -> list[StageSpec]:
    """Every stage of the pipeline in data-flow order (``in_run``: only those ``wit run`` runs, or not)."""
    discover()
    return sorted((s for s in REGISTRY.values() if in_run is None or s.in_run == in_run), key=lambda s: s.order)


def get(name: str) -> StageSpec:
    discover()
    if name not in REGISTRY:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(s.name for s in stages())}")
    return REGISTRY[name]


_ROOT = os.path.dirname(os.path.abspath(__file__))
_discovered = False


def stage_modules(root: str = _ROOT, package: str = "pipeline") -> list[str]:
    """The modules under ``root`` that define a ``@stage(..., order=...)`` function, found by reading
    their source (nothing is imported, so nothing heavy is loaded to find them)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                source = f.read()
            if "@stage(" in source and _declares_stage(source):
                rel = os.path.relpath(path, root)[: -len(".py")].replace(os.sep, ".")
                found.append(f"{package}.{rel}".removesuffix(".__init__"))
    return found


def _declares_stage(source: str) -> bool:
    """True when a module-level function is decorated ``@stage(...)`` with an ``order`` (a listed stage)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            for d in node.decorator_list:
                if isinstance(d, ast.Call) and getattr(d.func, "id", None) == "stage" and \
                        any(k.arg == "order" for k in d.keywords):
                    return True
    return False


def discover() -> None:
    """Import every stage module once, which fills the table."""
    global _discovered
    if not _discovered:
        for module in stage_modules():
            importlib.import_module(module)
        _discovered = True
