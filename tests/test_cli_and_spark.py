"""The `wit` command as a user meets it, and the Spark session's Java check."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.spark import check_java, java_version

WIT = [sys.executable, "-m", "pipeline.cli"]


def wit(*args, **kw):
    return subprocess.run(WIT + list(args), capture_output=True, text=True, timeout=120, **kw)


def test_help_lists_every_stage():
    out = wit("--help")
    assert out.returncode == 0
    for stage in ["sample", "serve", "extract", "filter", "queries", "match", "balance", "download",
                  "score", "select", "train", "eval", "report", "run", "demo"]:
        assert f"\n    {stage}" in out.stdout, f"`wit --help` does not list {stage}"


def test_every_subcommand_has_help():
    from pipeline.cli import build_parser

    def leaves(parser, path=()):
        subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs:
            yield " ".join(path), parser
        for sub in subs:
            for name, p in sub.choices.items():
                yield from leaves(p, (*path, name))

    commands = dict(leaves(build_parser()))
    assert len(commands) >= 15 and "queries build" in commands
    for name, p in commands.items():
        text = p.format_help()
        assert "--config" in text and "--set" in text, name


@pytest.mark.parametrize(
    "args, needle",
    [
        (["sample", "--set", "sample.n_pairs=lots"], "sample.n_pairs"),
        (["sample", "--set", "sample.nope=1"], "sample.nope: unknown key"),
        (["sample", "--config", "/no/such/run.yaml"], "config file not found"),
    ],
)
def test_user_errors_are_one_line_without_traceback(args, needle):
    out = wit(*args)
    assert out.returncode == 2
    assert needle in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0, out.stderr


def _fake_java(tmp_path, version_line):
    bindir = tmp_path / "jdk" / "bin"
    bindir.mkdir(parents=True)
    java = bindir / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)
    return tmp_path / "jdk"


def test_java_version_checks(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path / "a", 'openjdk version "11.0.2" 2019-01-15')))
    assert java_version() == 11
    with pytest.raises(UserError, match="Java 11 found, but Spark 4 needs Java 17"):
        check_java()
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path / "b", 'java version "1.8.0_392"')))
    assert java_version() == 8
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path / "c", 'openjdk version "17.0.15" 2025-04-15')))
    check_java()
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="Java not found"):
        check_java()


def test_missing_java_is_one_line_from_the_cli(tmp_path):
    env = dict(os.environ, JAVA_HOME=str(tmp_path / "nowhere"), PATH="/usr/bin/nonexistent")
    urls = tmp_path / "urls.csv"
    urls.write_text("url,caption\nhttp://example.com/a.jpg,a red circle on a blue background\n")
    out = subprocess.run(WIT + ["extract", str(urls), "-o", str(tmp_path / "o")], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 2
    assert "Java not found" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("job", sorted(p.name for p in (Path(__file__).resolve().parent.parent / "jobs").glob("*.py")))
def test_every_spark_submit_job_has_help_and_one_line_errors(job, tmp_path):
    script = Path(__file__).resolve().parent.parent / "jobs" / job
    env = dict(os.environ, PYTHONPATH=str(script.parent.parent))
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0 and "--config" in out.stdout, out.stderr[-2000:]
    stage = ["download"] if job == "wit.py" else []  # jobs/wit.py takes the stage first
    bad = subprocess.run([sys.executable, str(script), *stage, "--set", "download.threads=lots"], capture_output=True,
                         text=True, env=env, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "download.threads" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr[-2000:]


def test_readme_flags_exist():
    """Every `wit <command> --flag` the README shows is a real option of that command."""
    import re

    from pipeline.cli import build_parser

    def leaves(p, path=()):
        subs = [a for a in p._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs:
            yield " ".join(path), p
        for s in subs:
            for n, q in s.choices.items():
                yield from leaves(q, (*path, n))

    opts = {k: {o for a in p._actions for o in a.option_strings} for k, p in leaves(build_parser())}
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing, seen = [], 0
    for line in readme.splitlines():
        m = re.search(r"\bwit ((?:queries build)|[a-z]+)\b(.*)", line)
        if m and m.group(1) in opts:
            for f in re.findall(r"(--[a-z][a-z-]*)", m.group(2)):
                seen += 1
                if f not in opts[m.group(1)]:
                    missing.append(f"wit {m.group(1)} {f}")
    assert seen > 20 and not missing, missing
