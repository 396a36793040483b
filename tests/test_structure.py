"""The import structure (tests/structure.py): components import one way, with no cycle, and
docs/structure.md shows the layers as they are."""

from __future__ import annotations

import pytest

pytest.importorskip("grimp")

from tests.structure import DOC, component_graph, cycles, layers, render  # noqa: E402


@pytest.fixture(scope="module")
def deps():
    return component_graph()


def test_no_import_cycle_between_components(deps):
    assert cycles(deps) == [], "components that import each other (break the loop, see docs/structure.md)"


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layers({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == {"b": 0, "a": 1, "c": 2}


def test_layers_the_issue_named(deps):
    assert "pipeline.config" not in deps["filters"]  # filters sit below the config that validates their names
    assert "pipeline.train" not in deps["pipeline.eval"]  # both import pipeline.checkpoint instead
    assert "pipeline.config" not in deps["pipeline.fetch"]  # the fetcher takes its rules from pipeline.rules
    for low in ("pipeline.registry", "pipeline.stage", "pipeline.rules", "pipeline.errors"):
        assert "pipeline.cli" not in deps[low], low
    declarative = [c for c in deps if "pipeline.cli" in deps[c]]
    assert set(declarative) <= {"pipeline.download", "pipeline.crawl"}, declarative  # their own register()


def test_structure_picture_is_current(deps):
    assert DOC.read_text() == render(deps), "docs/structure.md is stale: run `python -m tests.structure`"
