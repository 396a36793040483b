"""The stage contract: a stage is a step, and one executor runs every step the same way.

A step is a plain function ``step(ctx, **options)`` that reads ``ctx.input``, writes under
``ctx.tmp`` and fills ``ctx.stats``. The ``@stage`` decorator turns it into the stage's public
function, with one signature for every stage:

    run_<stage>(cfg, spark=None, input=None, output=None, overwrite=False, **options) -> stats dict

and the executor does the rest, once for all stages (as datatrove splits executor from step):
skip an output that is already complete, pick the default paths, write under a temporary name,
write ``_stats.json``, mark the output complete (``_SUCCESS``). The CLI, ``wit run`` and the
``jobs/*.py`` spark-submit entry points all call these functions.

The decorator also registers the stage in the one table (pipeline/registry.py) that the CLI, ``wit
run`` and ``jobs/`` read: its place in the data flow, its command's help and options.

Three ways to write, chosen per stage:
- ``"atomic"``: the whole output goes to a temporary sibling that is renamed when the step ends
  (a Spark write, a query list); a killed run leaves nothing that looks complete.
- ``"parts"``: the output is many parts that the step itself writes atomically and skips when a
  rerun finds them (download's shards, score's Parquet files); ``ctx.tmp`` is the output itself,
  and its ``_SUCCESS`` marker is removed before the step changes anything. In a distributed
  launch (torchrun: train) every rank runs the step, but only rank 0 touches the output.
- ``"view"``: the step writes its one output itself on every call (the report page, an eval result):
  nothing is skipped or marked; ``ctx.tmp`` is the output.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline import log, progress, storage
from pipeline.registry import Flag, Option, StageSpec, register
from pipeline.stats import STATS_FILE, StageStats, read_stats

WRITES = ("atomic", "parts", "view")
__all__ = ["Flag", "Option", "StageContext", "stage"]


@dataclass
class StageContext:
    """What a step gets: the run config, its resolved paths, the stats to fill, and Spark on demand."""

    name: str
    cfg: Any
    input: Any  # a path, or a list of paths (extract), or None for stages that read no dataset
    output: str
    tmp: str  # where the step writes: a temporary sibling ("atomic") or the output itself ("parts")
    overwrite: bool
    stats: StageStats
    _spark: Any = field(default=None, repr=False)
    # A step that stops before its output is whole (train's stop_after) sets this False: the
    # executor then writes no _stats.json and leaves the output unmarked, to be resumed.
    complete: bool = True

    @property
    def spark(self):
        """The caller's SparkSession, else one built from the config the first time a step asks."""
        if self._spark is None:
            from pipeline.spark import get_spark

            self._spark = get_spark(self.cfg.spark)
        return self._spark


PathDefault = str | Callable[[Any], Any] | None


def _default(rule: PathDefault, cfg) -> Any:
    if rule is None:
        return None
    return rule(cfg) if callable(rule) else cfg.path(rule)


def stage(name: str, *, input: PathDefault, output: PathDefault, writes: str = "atomic",
          redo_complete: Callable[..., bool] | None = None, order: int | None = None,
          options: list[Flag | Option] | tuple = (), **command: Any):
    """Make ``run_<name>`` from a step. ``input``/``output``: the default path (a name under
    ``output_dir``, or a function of the config). ``redo_complete(cfg, **options)``: run the step
    even on a complete output (download's ``--retry-failed``).

    ``order``: the stage's place in the data flow; with it the stage is registered (pipeline/registry.py)
    for the CLI, ``wit run`` and ``jobs/``, with its command-line ``options`` (``Flag``/``Option``) and
    ``command`` fields of ``StageSpec`` (help, description, input_help, output_help, positional, show,
    in_run, spark, job_defaults). Without it the function is a stage that nothing lists (tests)."""
    if writes not in WRITES:
        raise ValueError(f"writes must be one of {WRITES}")
    unknown = set(command) - set(StageSpec.__dataclass_fields__)
    if unknown:
        raise TypeError(f"stage({name!r}): unknown argument(s) {', '.join(sorted(unknown))}")

    def wrap(step: Callable[..., dict | None]) -> Callable[..., dict]:
        params = list(inspect.signature(step).parameters.values())[1:]  # the step's own keyword options
        original, step = step, progress.with_task_progress(name, step)  # a line per stage of its Spark tasks

        @functools.wraps(step)
        def run(cfg, spark=None, input=None, output=None, overwrite: bool = False, **opts) -> dict[str, Any]:
            unknown = set(opts) - {p.name for p in params}
            if unknown:  # a caller's argument is never dropped silently
                raise TypeError(f"run_{name}() got unexpected argument(s): {', '.join(sorted(unknown))}")
            out = output or _default(output_rule, cfg)
            out = None if out is None else str(out).rstrip("/")  # None: a view with no output (eval)
            inp = input if input is not None else _default(input_rule, cfg)
            if isinstance(inp, str):
                inp = inp.rstrip("/")
            redo = redo_complete is not None and redo_complete(cfg, **opts)
            if writes == "view":  # rewritten on every call: nothing to skip, nothing to mark
                ctx = StageContext(name, cfg, inp, out, out, overwrite, StageStats(name), spark)
                return step(ctx, **opts) or ctx.stats.as_dict()
            if storage.is_complete(out) and not overwrite and not redo:
                log.info(f"{name}: {out} is complete, skipping (use --overwrite to redo)")
                return read_stats(out) or {}
            ctx = StageContext(name, cfg, inp, out, out, overwrite, StageStats(name), spark)
            if writes == "atomic":
                parent, _, base = out.rpartition("/")
                storage.clean_temporaries(parent or ".", base)  # this output's leftovers of killed attempts
                with storage.atomic_path(out) as ctx.tmp:
                    result = _finish(ctx, step(ctx, **opts))
            elif not _is_writer():  # another rank of a distributed run: only rank 0 touches the output
                return step(ctx, **opts) or ctx.stats.as_dict()
            else:
                if overwrite:
                    storage.remove(out)
                storage.unmark_complete(out)  # the parts are about to change
                returned = step(ctx, **opts)
                if not ctx.complete:
                    return returned or ctx.stats.as_dict()
                result = _finish(ctx, returned)
            storage.mark_complete(out)
            return result

        output_rule, input_rule = output, input
        run.__signature__ = inspect.Signature(  # what `help(run_match)` and call sites see
            [inspect.Parameter("cfg", inspect.Parameter.POSITIONAL_OR_KEYWORD),
             *(inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d)
               for n, d in (("spark", None), ("input", None), ("output", None), ("overwrite", False))),
             *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params)])
        run.step = original
        run.stage_name = name
        if order is not None:
            register(StageSpec(name, order, run, input_rule=input_rule, options=list(options), **command))
        return run

    return wrap


def _is_writer() -> bool:
    """False in the processes of a distributed launch other than rank 0 (torchrun sets RANK in each)."""
    return os.environ.get("RANK", "0") == "0"


def _finish(ctx: StageContext, returned: dict | None) -> dict[str, Any]:
    """Write the stats (or the dict the step returned) as ``_stats.json`` where the step wrote."""
    if returned is None:
        return ctx.stats.write(ctx.tmp)
    storage.write_json(f"{ctx.tmp}/{STATS_FILE}", returned)
    return returned

