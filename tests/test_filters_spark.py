"""`wit filter` inside Spark: the chain under mapInArrow, global dedup, outputs, stats, reruns,
and the sample web's ground truth (language and junk drops match its lang / junk_kind columns)."""

import collections
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import RunConfig
from pipeline.errors import UserError
from pipeline.filter import run_filter
from pipeline.ids import make_uid
from schemas import CANDIDATES, DROPPED, FILTERED

EN = "A brown dog runs through the green grass."


def write_candidates(path, rows):
    """rows: (url, text[, uid]) → a CANDIDATES parquet file (nullable, like real messy input)."""
    cols = {f.name: [] for f in CANDIDATES}
    for i, r in enumerate(rows):
        url, text = r[0], r[1]
        uid = r[2] if len(r) > 2 else make_uid(url or "", text or "")
        vals = {"uid": uid, "url": url, "text": text, "text_source": "alt", "page_url": "http://example.com/p.html",
                "source_file": str(path), "record_id": str(i), "page_lang": None}
        for k in cols:
            cols[k].append(vals[k])
    schema = pa.schema([f.with_nullable(True) for f in CANDIDATES])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols, schema=schema), path)


def read(path):
    """A dataset folder's part files (_stats.json and _SUCCESS sit beside them)."""
    return pa.concat_tables([pq.read_table(f) for f in sorted(path.glob("*.parquet"))])


@pytest.fixture
def cfg(tmp_path):
    c = RunConfig(output_dir=str(tmp_path / "out"))
    c.spark.shuffle_partitions = 4
    return c


def test_filter_stage_in_spark(spark, cfg, tmp_path):
    src = tmp_path / "out" / "candidates"
    write_candidates(src / "part-0.parquet", [
        ("http://example.com/a.jpg", EN),
        ("http://example.com/b.jpg", "IMG_1234.JPG"),
        ("http://example.com/c.jpg", "Ein brauner Hund rennt durch das grüne Gras."),
        ("http://10.0.0.1/d.jpg", EN),
        ("http://example.com/e.jpg", "ok"),
        ("http://example.com/f.jpg", None),  # bad row: no text
        ("http://example.com/g.jpg", "A cat sleeps on a warm red sofa.", None),  # no uid: computed
    ])
    write_candidates(src / "part-1.parquet", [
        ("http://example.com/a.jpg", EN),  # duplicate of a row in the other file → global dedup
        ("http://example.com/h.jpg", "word " * 150),
        ("http://example.com/i.jpg", "Two children are playing football on a sunny beach."),
    ])
    stats = run_filter(cfg, spark)
    out, dropped_out = tmp_path / "out" / "filtered", tmp_path / "out" / "dropped" / "filter"
    assert (out / "_SUCCESS").exists() and (dropped_out / "_SUCCESS").exists()
    kept, dropped = read(out), read(dropped_out)
    assert kept.schema.names == FILTERED.names and dropped.schema.names == DROPPED.names
    assert sorted(kept.column("url").to_pylist()) == ["http://example.com/a.jpg", "http://example.com/g.jpg", "http://example.com/i.jpg"]
    assert set(kept.column("lang").to_pylist()) == {"en"}
    assert all(s > 0.5 for s in kept.column("lang_score").to_pylist())
    assert make_uid("http://example.com/g.jpg", "A cat sleeps on a warm red sofa.") in kept.column("uid").to_pylist()
    reasons = dict(zip(dropped.column("url").to_pylist(), dropped.column("drop_reason").to_pylist()))
    assert reasons == {
        "http://example.com/b.jpg": "junk", "http://example.com/c.jpg": "language", "http://10.0.0.1/d.jpg": "url_safety",
        "http://example.com/e.jpg": "min_length", "http://example.com/f.jpg": "junk", "http://example.com/a.jpg": "dedup",
        "http://example.com/h.jpg": "max_length",
    }
    assert dropped.filter(pa.compute.equal(dropped["drop_reason"], "language"))["lang"].to_pylist() == ["de"]
    assert stats["input_rows"] == 10 and stats["output_rows"] == 3
    assert stats["drops"] == {"dedup": 1, "junk": 2, "language": 1, "max_length": 1, "min_length": 1, "url_safety": 1}
    assert json.loads((out / "_stats.json").read_text())["drops"] == stats["drops"]
    # a rerun skips the complete output; --overwrite redoes it with the same result
    mtime = (out / "_SUCCESS").stat().st_mtime_ns
    assert run_filter(cfg, spark)["drops"] == stats["drops"]
    assert (out / "_SUCCESS").stat().st_mtime_ns == mtime
    assert run_filter(cfg, spark, overwrite=True)["output_rows"] == 3


def test_chain_order_and_switches(spark, cfg, tmp_path):
    src = tmp_path / "in"
    write_candidates(src / "p.parquet", [("http://example.com/a.jpg", EN), ("http://example.com/a.jpg", EN),
                                         ("http://example.com/b.jpg", "Un chien brun court dans l'herbe verte.")])
    cfg.filter.chain = ["dedup", "language"]
    cfg.filter.languages = ["en", "fr"]
    stats = run_filter(cfg, spark, input=str(src))
    assert stats["drops"] == {"dedup": 1} and stats["output_rows"] == 2
    assert stats["extra"]["detected_languages"] == {"en": 1, "fr": 1}


def test_user_errors(spark, cfg, tmp_path):
    with pytest.raises(UserError, match="filter input not found"):
        run_filter(cfg, spark, input=str(tmp_path / "nope"))
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"link": ["http://x/a.jpg"]}), src / "p.parquet")
    with pytest.raises(UserError, match="no url or text column"):
        run_filter(cfg, spark, input=str(src))
    cfg.filter.language_model = str(tmp_path / "missing.ftz")
    with pytest.raises(UserError, match="model file not found"):
        run_filter(cfg, spark, input=str(src))


@pytest.mark.slow
def test_sample_web_drops_match_ground_truth(spark, cfg, tmp_path):
    """Every English caption is kept, every other language dropped by "language", every junk text
    by a text rule. Documented exceptions: "entities" junk is a fine caption once unescaped (kept);
    "long" is dropped by max_length; a "duplicate" is dropped by dedup, or by whatever dropped its
    original."""
    from pipeline.sample_web import generate_sample_web

    sw = tmp_path / "sample"
    generate_sample_web(str(sw), n_pairs=600, seed=0)
    gt = [r for r in pq.read_table(sw / "ground_truth.parquet").to_pylist() if r["text"]]
    write_candidates(tmp_path / "cand" / "p.parquet", [(r["url"], r["text"]) for r in gt])
    cfg.download.allow_hosts = ["127.0.0.1:8765"]  # the sample's base URL
    stats = run_filter(cfg, spark, input=str(tmp_path / "cand"))
    reason = {int(i): None for i in read(tmp_path / "out" / "filtered").column("record_id").to_pylist()}
    d = read(tmp_path / "out" / "dropped" / "filter")
    reason.update(zip(map(int, d.column("record_id").to_pylist()), d.column("drop_reason").to_pylist()))
    assert len(reason) == len(gt)
    first: dict[str, int] = {}
    table = collections.Counter()
    for i, r in enumerate(gt):
        kind = r["junk_kind"]
        uid = make_uid(r["url"], r["text"])
        if kind is None or kind == "entities":
            want = None if r["lang"] == "en" else "language"
        elif kind == "long":
            want = "max_length"
        elif kind == "duplicate":
            want = "dedup" if reason[first[uid]] is None else reason[first[uid]]
        else:
            want = "junk"
        first.setdefault(uid, i)
        table[(r["lang"], kind, want, reason[i])] += 1
    wrong = {k: v for k, v in table.items() if k[2] != k[3]}
    assert not wrong, wrong
    langs = {k[0] for k in table if k[1] is None}
    assert {"en", "fr", "de", "es", "ru", "ja"} <= langs
    assert stats["drops"]["language"] > 0 and stats["drops"]["junk"] > 0
