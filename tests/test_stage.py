"""The stage contract (pipeline/stage.py): one signature, skip-if-complete, temporary names, stats,
markers; and the CLI and jobs built on it."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

from pipeline import storage
from pipeline.config import load_config
from pipeline.stage import stage
from pipeline.stats import read_stats
from tests.cluster import REPO

CALLS: list[dict] = []


@stage("copy", input="src", output="dst")
def run_copy(ctx, upper: bool = False, fail: bool = False) -> None:
    """A stage in miniature: copies one text file, optionally failing half-way."""
    CALLS.append({"input": ctx.input, "output": ctx.output, "tmp": ctx.tmp})
    fs, p = storage.fs_for(ctx.tmp)
    fs.makedirs(p, exist_ok=True)
    text = open(f"{ctx.input}/a.txt").read()
    with open(f"{p}/a.txt", "w") as f:
        f.write(text.upper() if upper else text)
    if fail:
        raise RuntimeError("killed half-way")
    ctx.stats.input_rows = ctx.stats.output_rows = 1
    ctx.stats.drop("nothing", 0)


@stage("parts", input=None, output="parts", writes="parts")
def run_parts(ctx) -> dict:
    assert not storage.is_complete(ctx.output), "the marker goes before the parts change"
    assert ctx.tmp == ctx.output
    return {"stage": "parts", "parts": 3}


@pytest.fixture
def cfg(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("hello")
    CALLS.clear()
    return load_config(overrides={"output_dir": str(tmp_path)})


def test_one_signature_with_the_steps_options_keyword_only():
    params = inspect.signature(run_copy).parameters
    assert list(params)[:5] == ["cfg", "spark", "input", "output", "overwrite"]
    assert params["upper"].kind is inspect.Parameter.KEYWORD_ONLY


def test_an_argument_the_stage_does_not_take_is_an_error(cfg):
    with pytest.raises(TypeError, match="unexpected argument.*shards_dir"):
        run_copy(cfg, shards_dir="x")
    assert not CALLS


def test_atomic_stage_writes_under_a_temporary_name_then_skips_when_complete(cfg, tmp_path):
    stats = run_copy(cfg)
    assert CALLS[0]["input"] == str(tmp_path / "src") and CALLS[0]["output"] == str(tmp_path / "dst")
    assert ".tmp-" in CALLS[0]["tmp"]
    assert (tmp_path / "dst" / "a.txt").read_text() == "hello"
    assert storage.is_complete(str(tmp_path / "dst"))
    assert read_stats(str(tmp_path / "dst")) == stats and stats["drops"] == {}
    assert run_copy(cfg, upper=True) == stats and len(CALLS) == 1  # complete: skipped
    run_copy(cfg, upper=True, overwrite=True)
    assert (tmp_path / "dst" / "a.txt").read_text() == "HELLO"


def test_a_failed_step_leaves_no_output_and_no_temporary(cfg, tmp_path):
    with pytest.raises(RuntimeError):
        run_copy(cfg, fail=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    (tmp_path / "dst.tmp-deadbeef").mkdir()  # what a kill -9 would leave
    (tmp_path / "other.tmp-deadbeef").mkdir()  # another output's: not ours to remove
    run_copy(cfg, output=str(tmp_path / "dst"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "other.tmp-deadbeef", "src"]


def test_parts_stage_stores_what_the_step_returns(cfg, tmp_path):
    out = tmp_path / "parts"
    out.mkdir()
    (out / "_SUCCESS").write_text("")  # a complete output redone with overwrite
    assert run_parts(cfg, overwrite=True) == {"stage": "parts", "parts": 3}
    assert json.loads((out / "_stats.json").read_text())["parts"] == 3
    assert storage.is_complete(str(out))


def test_every_stage_function_has_the_contract():
    from pipeline import registry

    specs = registry.stages()
    assert [s.name for s in specs] == ["crawl", "extract", "filter", "queries", "match", "balance", "download",
                                       "score", "select", "train", "eval", "report"]
    for s in specs:
        params = list(inspect.signature(s.run).parameters)
        assert params[:5] == ["cfg", "spark", "input", "output", "overwrite"], (s.name, params)
        assert s.run.__name__ == f"run_{s.name}"
    assert [s.name for s in registry.stages(in_run=False)] == ["eval"]  # train evaluates inside `wit run`


def test_stages_are_found_by_their_decorator_not_a_list(tmp_path):
    """A new stage is one module: the registry finds the modules that declare ``@stage(..., order=…)``
    by reading their source, without importing anything else."""
    from pipeline.registry import stage_modules

    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "new_stage.py").write_text('from pipeline.stage import stage\n\n\n@stage("new", order=55, input=None, '
                                      'output="new")\ndef run_new(ctx):\n    pass\n')
    (pkg / "sub" / "__init__.py").write_text('@stage("s", order=1, input=None, output="s")\ndef run_s(ctx):\n    pass\n')
    (pkg / "helper.py").write_text('"""Mentions @stage( in a docstring only."""\n')
    (pkg / "unlisted.py").write_text('@stage("t", input=None, output="t")\ndef run_t(ctx):\n    pass\n')
    assert stage_modules(str(pkg), "pkg") == ["pkg.new_stage", "pkg.sub"]


def test_a_stage_name_registered_twice_is_an_error():
    from pipeline import registry

    registry.discover()
    with pytest.raises(ValueError, match="registered twice"):
        @stage("select", order=1, input=None, output="x")
        def run_other(ctx):
            pass


def test_every_single_input_stage_takes_input_and_many_input_stages_positionals(tmp_path):
    from pipeline.cli import _given_input, build_parser

    parser = build_parser()
    args = parser.parse_args(["filter", "--input", "cands"])
    assert _given_input(args) == "cands"
    assert _given_input(parser.parse_args(["filter", "cands"])) == "cands"
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="give the input once"):
        _given_input(parser.parse_args(["filter", "a", "--input", "b"]))
    for name in ("match", "balance", "download", "score", "select", "train", "eval", "report"):
        assert _given_input(parser.parse_args([name, "--input", "x"])) == "x", name
    for name in ("extract", "crawl"):
        args = parser.parse_args([name, "a", "b", "--input", "c", "--input", "d"])
        assert _given_input(args) == ["a", "b", "c", "d"], name
        assert _given_input(parser.parse_args([name])) is None
    with pytest.raises(SystemExit):
        parser.parse_args(["queries", "build", "--input", "x"])  # reads no dataset


def test_a_module_that_adds_its_own_subcommand_still_works():
    """download (and crawl) still add their subcommand with ``register(sub, common)``: the CLI uses it."""
    from pipeline import registry
    from pipeline.cli import _own_register, build_parser

    assert _own_register(registry.get("download")) is not None
    assert _own_register(registry.get("select")) is None
    args = build_parser().parse_args(["download", "--input", "pairs", "--threads", "3"])
    assert args.input_opt == "pairs" and args.ov__download__threads == 3


def test_eval_and_report_are_views_with_the_one_signature(cfg, tmp_path):
    """Report: rewritten on every call, no _SUCCESS (a view of the run); overwrite is accepted."""
    from pipeline.report import run_report

    d = run_report(cfg, overwrite=True)
    assert d["path"] == f"{tmp_path}/report.html" and (tmp_path / "report.html").stat().st_size >= d["bytes"] > 0
    assert not (tmp_path / "_SUCCESS").exists()
    out = tmp_path / "elsewhere.html"
    assert run_report(cfg, input=str(tmp_path), output=str(out))["path"] == str(out) and out.exists()


def test_job_files_shadow_nothing_and_need_no_sys_path_workaround():
    names = {p.stem for p in (REPO / "jobs").glob("*.py")}
    assert not names & set(sys.stdlib_module_names), names & set(sys.stdlib_module_names)
    for p in (REPO / "jobs").glob("*.py"):
        assert "sys.path" not in p.read_text(), p.name


def test_jobs_wit_runs_any_stage_by_name():
    r = subprocess.run([sys.executable, str(REPO / "jobs" / "wit.py"), "select", "--help"], capture_output=True,
                       text=True, timeout=120, cwd=REPO / "jobs")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("usage: spark-submit jobs/wit.py select") and "--scores" in r.stdout


def test_help_shows_readable_metavars():
    from pipeline.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "OV__" not in text, f"wit {name} --help shows a dest as metavar"


@pytest.mark.parametrize("job", sorted(p.name for p in (REPO / "jobs").glob("*.py")))
def test_each_job_is_the_wit_command_under_spark_submit(job):
    """`python jobs/X.py --help` prints the options of the matching `wit` command, with jobs/ first on sys.path
    as spark-submit puts it."""
    r = subprocess.run([sys.executable, str(REPO / "jobs" / job), "--help"], capture_output=True, text=True,
                       timeout=120, cwd=REPO / "jobs")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith(f"usage: spark-submit jobs/{job}"), r.stdout[:200]
    assert "--output" in r.stdout or job in ("run.py", "wit.py")


@stage("partial", input=None, output="partial", writes="parts")
def run_partial(ctx, stop: bool = False) -> dict:
    fs, p = storage.fs_for(ctx.output)
    fs.makedirs(p, exist_ok=True)
    ctx.complete = not stop
    return {"stage": "partial", "stopped": stop}


def test_a_step_that_stops_early_leaves_its_output_resumable(cfg, tmp_path):
    assert run_partial(cfg, stop=True) == {"stage": "partial", "stopped": True}
    assert not storage.is_complete(str(tmp_path / "partial")) and not (tmp_path / "partial" / "_stats.json").exists()
    assert run_partial(cfg)["stopped"] is False
    assert storage.is_complete(str(tmp_path / "partial"))


def test_only_rank_zero_of_a_distributed_run_marks_the_output(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert run_partial(cfg)["stopped"] is False
    assert not storage.is_complete(str(tmp_path / "partial"))
    monkeypatch.setenv("RANK", "0")
    run_partial(cfg)
    assert storage.is_complete(str(tmp_path / "partial"))
