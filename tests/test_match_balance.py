"""Matching (MetaCLIP substring semantics) and query balancing, in Python and through Spark."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.balance import entry_probabilities, keep_decisions, run_balance, t_from_tail_share
from pipeline.config import load_config
from pipeline.ids import make_uid
from pipeline.match import Matcher, run_match
from pipeline.queries import spacing
from schemas import BALANCED, MATCHED

ENTRIES = ["A", "cat", "dog", "hot dog", "New York", "New", "York", "U.S.", "10", "York City", "New York City"]


def read_out(folder, schema=None) -> pa.Table:
    """A stage output folder with pyarrow (_stats.json and _-files beside the Parquet parts skipped)."""
    return ds.dataset(str(folder), format="parquet", exclude_invalid_files=True, schema=schema).to_table()


def ids_of(m: Matcher, text: str) -> set[str]:
    return {ENTRIES[i] for i in m.match(text)}


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher(ENTRIES)


@pytest.mark.parametrize("text,expected", [
    ("A cat.", {"A", "cat"}),
    ("cats", set()),
    ("CAT", set()),
    ("hot-dog", set()),
    ("hot  dog", {"dog"}),
    ("hot dog", {"hot dog", "dog"}),
    ("New York", {"New York", "New", "York"}),
    ("New York City!", {"New York City", "New York", "York City", "New", "York"}),
    ("cat,dog", {"cat", "dog"}),
    ("cat;dog:A?cat!dog`A", {"cat", "dog", "A"}),
    ("the U.S. flag", set()),
    ("U.S.", set()),
    ("Room 10", {"10"}),
    ("Room 100", set()),
    ("cat\tdog\nA\r", {"cat", "dog", "A"}),
    ("(cat)", set()),
    ("", set()),
])
def test_metaclip_matching_rules(matcher, text, expected):
    assert ids_of(matcher, text) == expected


def test_each_entry_once_and_ids_ascending(matcher):
    assert matcher.match("cat cat cat") == [1]
    assert matcher.match("York New cat A") == [0, 1, 5, 6]
    assert matcher.match_many(["cat", None, "nothing"]) == [[1], None, []]


def test_duplicate_entries_report_every_id():
    assert Matcher(["cat", "dog", "cat"]).match("a cat") == [0, 2]


def test_matcher_equals_metaclip_loop_on_real_captions(shared_data):
    """The automaton gives exactly MetaCLIP's `" "+entry+" " in spacing(text)` loop on real captions."""
    texts = [t for t in pq.read_table(shared_data / "captions" / "laion400m_sample_10000.parquet")
             .column("TEXT").to_pylist()[:1500] if t]
    rng = random.Random(0)
    toks = [w for t in texts for w in t.split()]
    pairs = [f"{a} {b}" for t in texts for a, b in zip(t.split(), t.split()[1:])]
    entries = sorted(set(rng.sample(toks, 1500) + rng.sample(pairs, 500) + ["U.S.", "a", "of", "New York"]))
    m = Matcher(entries)
    spaced = [f" {e} " for e in entries]
    for t in texts:
        s = spacing(t)
        assert m.match(t) == [i for i, e in enumerate(spaced) if e in s], t


# --------------------------------------------------------------------------- balancing (pure)
def test_entry_probabilities():
    assert entry_probabilities(np.array([0, 5, 10, 40]), 10).tolist() == [1.0, 1.0, 1.0, 0.25]


def test_keep_rate_is_one_minus_product():
    """p = 0.5 and p = 0.2 on one text: kept ~60% of the time (1 − 0.5·0.8), not 70% or 50%."""
    uids = [make_uid(f"http://x/{i}.jpg", "a cat") for i in range(20_000)]
    keep, prob = keep_decisions(uids, [[0, 1]] * len(uids), np.array([0.5, 0.2]), seed=0)
    assert np.allclose(prob, 0.6)
    assert 0.58 < keep.mean() < 0.62
    keep1, _ = keep_decisions(uids, [[1]] * len(uids), np.array([0.5, 0.2]), seed=0)
    assert 0.18 < keep1.mean() < 0.22


def test_keep_decisions_deterministic_and_seeded():
    uids = [make_uid(f"http://x/{i}.jpg", "t") for i in range(2000)]
    eids = [[0, 1]] * len(uids)
    p = np.array([0.3, 0.1, 1.0])
    a, _ = keep_decisions(uids, eids, p, seed=1)
    b, _ = keep_decisions(uids, eids, p, seed=1)
    c, _ = keep_decisions(uids, eids, p, seed=2)
    assert (a == b).all() and (a != c).any()
    keep, prob = keep_decisions(uids[:3], [[2], [], None], p, seed=0)
    assert keep.tolist() == [True, False, False] and prob.tolist() == [1.0, 0.0, 0.0]


def test_t_from_tail_share():
    counts = np.array([1] * 60 + [10] * 4 + [1000] * 9 + [0] * 5)  # 60 + 40 + 9000 = 9100 matches
    # cumulative share: 60/9100 = 0.66%, 100/9100 = 1.1%, then 100%
    assert t_from_tail_share(counts, 0.005) == 1
    assert t_from_tail_share(counts, 0.01) == 10
    assert t_from_tail_share(counts, 0.06) == 1000
    tail = counts[counts < 10].sum() / counts.sum()
    assert tail < 0.01 <= counts[counts <= 10].sum() / counts.sum()


# --------------------------------------------------------------------------- Spark stages
def write_candidates(path, texts: list[str | None], lang: bool = False) -> None:
    """A candidates-schema parquet (no lang columns unless asked)."""
    rows = {"uid": [make_uid(f"http://img/{i}.jpg", t or "") for i, t in enumerate(texts)],
            "url": [f"http://img/{i}.jpg" for i in range(len(texts))], "text": texts,
            "text_source": ["alt"] * len(texts), "page_url": ["http://page/"] * len(texts),
            "source_file": ["crawl.warc.gz"] * len(texts), "record_id": pa.nulls(len(texts), pa.string()),
            "page_lang": pa.nulls(len(texts), pa.string())}
    if lang:
        rows["lang"] = ["en"] * len(texts)
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), path / "part-0.parquet")


def make_cfg(tmp_path, entries: list[str], **balance):
    qfile = tmp_path / "metadata.json"
    qfile.write_text(json.dumps(entries))
    return load_config(overrides={"output_dir": str(tmp_path / "out"), "queries": {"path": str(qfile)},
                                  "balance": balance or {}})


def test_match_stage(spark, tmp_path):
    texts = ["A cat.", "cats", "hot dog stand", None, "   ", "New York", "CAT", "cat,dog"]
    write_candidates(tmp_path / "out" / "filtered", texts)
    cfg = make_cfg(tmp_path, ENTRIES)
    stats = run_match(cfg, spark)
    out = tmp_path / "out" / "matched"
    t = read_out(out, MATCHED)
    got = {r["text"]: sorted(ENTRIES[i] for i in r["entry_ids"]) for r in t.to_pylist()}
    assert got == {"A cat.": ["A", "cat"], "hot dog stand": ["dog", "hot dog"], "New York": ["New", "New York", "York"],
                   "cat,dog": ["cat", "dog"]}
    assert all(r["lang"] is None for r in t.to_pylist())
    assert stats["input_rows"] == 8 and stats["output_rows"] == 4
    assert stats["drops"] == {"no_query_match": 2, "no_text": 2}
    assert stats["extra"]["entries"] == len(ENTRIES) and stats["extra"]["matches"] == 9
    assert (out / "_SUCCESS").exists()
    assert run_match(cfg, spark)["output_rows"] == 4  # complete → skipped, same stats


def test_balance_stage_keep_rate_determinism_and_counts(spark, tmp_path):
    """4000 texts hold entries 0 and 1 (p = 0.5, 0.2 at t = 2000), 6000 more hold entry 1 only."""
    both, only_b = 4000, 6000
    texts = [f"alpha beta {i}" for i in range(both)] + [f"beta {i}" for i in range(only_b)]
    write_candidates(tmp_path / "out" / "filtered", texts, lang=True)
    cfg = make_cfg(tmp_path, ["alpha", "beta", "never"], t=2000, seed=7)
    run_match(cfg, spark)
    stats = run_balance(cfg, spark)
    out = tmp_path / "out" / "balanced"
    t = read_out(out, BALANCED)
    rows = t.to_pylist()
    kept_both = [r for r in rows if r["text"].startswith("alpha")]
    assert 0.56 < len(kept_both) / both < 0.64
    assert all(abs(r["keep_prob"] - 0.6) < 1e-9 for r in kept_both)
    assert all(abs(r["keep_prob"] - 0.2) < 1e-9 for r in rows if r["text"].startswith("beta"))
    ex = stats["extra"]
    assert ex["t"] == 2000 and ex["entries"] == 3 and ex["entries_never_matched"] == 1
    assert ex["expected_size"] == pytest.approx(both * 0.6 + only_b * 0.2)
    assert ex["actual_size"] == len(rows) == stats["output_rows"]
    assert stats["drops"] == {"balanced_out": both + only_b - len(rows)}
    counts = pq.read_table(out / "_entry_counts.parquet").to_pydict()
    assert counts["entry"] == ["alpha", "beta", "never"] and counts["count"] == [both, both + only_b, 0]
    assert counts["kept"][0] == len(kept_both) and counts["kept"][2] == 0
    assert ex["before"]["top"][0]["entry"] == "beta"
    # Reproducible: the same seed keeps the same rows; another seed another sample.
    uids = {r["uid"] for r in rows}
    run_balance(cfg, spark, overwrite=True)
    assert {r["uid"] for r in read_out(out).to_pylist()} == uids
    cfg2 = make_cfg(tmp_path, ["alpha", "beta", "never"], t=2000, seed=8)
    run_balance(cfg2, spark, output=str(tmp_path / "b2"))
    assert {r["uid"] for r in read_out(tmp_path / "b2").to_pylist()} != uids


def test_balance_tail_share(spark, tmp_path):
    # entry 0: 300 texts, entry 1: 20, entries 2..11: 1 each → 330 matches; 6% = 19.8 → t = 20
    texts = [f"e0 {i}" for i in range(300)] + [f"e1 {i}" for i in range(20)] + [f"e{k}" for k in range(2, 12)]
    write_candidates(tmp_path / "m", texts)
    cfg = make_cfg(tmp_path, [f"e{k}" for k in range(12)], tail_share=0.06)
    run_match(cfg, spark, input=str(tmp_path / "m"))
    stats = run_balance(cfg, spark)
    assert stats["extra"]["t"] == 20 and stats["extra"]["t_rule"] == "tail_share=0.06"
    kept = read_out(tmp_path / "out" / "balanced").column("text").to_pylist()
    assert sum(t.startswith("e1 ") for t in kept) == 20  # p = 1 below t
    assert 5 < sum(t.startswith("e0 ") for t in kept) < 45  # p = 20/300


def test_cli_match_and_balance(tmp_path):
    from pipeline.cli import main

    write_candidates(tmp_path / "in", ["a cat", "a dog", "nothing here"])
    (tmp_path / "q.txt").write_text("cat\ndog\n")
    base = ["-o", str(tmp_path / "o"), "--master", "local[1]"]
    assert main(["match", *base, "--input", str(tmp_path / "in"), "--queries", str(tmp_path / "q.txt")]) == 0
    assert main(["balance", *base, "--t", "1", "--seed", "3", "--set", "queries.path=" + str(tmp_path / "q.txt")]) == 0
    assert read_out(tmp_path / "o" / "balanced").num_rows == 2
    assert main(["match", *base, "--input", str(tmp_path / "missing"), "--queries", str(tmp_path / "q.txt"),
                 "--overwrite"]) == 2


@pytest.mark.slow
def test_laion_sample_match_and_balance(spark, shared_data, tmp_path):
    """10k real LAION captions against the wordfreq list, then t = 50."""
    src = pq.read_table(shared_data / "captions" / "laion400m_sample_10000.parquet")
    urls, texts = src.column("URL").to_pylist(), src.column("TEXT").to_pylist()
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"url": urls, "text": texts}), tmp_path / "in" / "laion.parquet")  # no uid: computed
    cfg = load_config(overrides={"output_dir": str(tmp_path / "out"), "balance": {"t": 50},
                                 "queries": {"sources": ["wordfreq"], "budget": 20_000}})
    from pipeline.queries import run_queries

    run_queries(cfg, spark)
    m = run_match(cfg, spark, input=str(tmp_path / "in"))
    assert m["input_rows"] == len(texts)
    assert m["output_rows"] + sum(m["drops"].values()) == len(texts)
    assert m["output_rows"] > 0.7 * len(texts)  # most English captions contain a common word
    matched = read_out(tmp_path / "out" / "matched").to_pylist()
    assert all(r["uid"] == make_uid(r["url"], r["text"]) for r in matched[:200])
    b = run_balance(cfg, spark)
    ec = pq.read_table(tmp_path / "out" / "balanced" / "_entry_counts.parquet").to_pydict()
    count, kept = np.array(ec["count"]), np.array(ec["kept"])
    assert (kept[count <= 50] == count[count <= 50]).all()  # the tail is kept whole
    assert (kept <= count).all() and kept.max() < count.max()  # the head ("the", "of") is cut
    assert b["output_rows"] < m["output_rows"]
    assert abs(b["extra"]["expected_size"] - b["output_rows"]) < 5 * np.sqrt(b["extra"]["expected_size"])
