"""Damaged input files at every stage, through the `wit` command: a file that is not its format, an
empty file, a cut file and a file with the wrong schema. Each stage either skips the file with a
recorded reason (extract, report) or stops with one line naming it and exit code 2, never a traceback
(README "Damaged inputs")."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import inputs
from pipeline.cli import main
from tests.shardkit import jpeg, write_shards

KINDS = ["not_format", "empty", "cut", "wrong_schema"]
REAL_WARC = "/work/shared/data/warc/resiliparse_warcfile.warc.gz"


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def pairs_table(n: int = 5) -> pa.Table:
    return pa.table({"url": [f"http://127.0.0.1:9/{i}.jpg" for i in range(n)], "text": [f"a red cat {i}" for i in range(n)]})


def damaged_parquet(kind: str, good: pa.Table, wrong: pa.Table | None = None) -> bytes:
    """The bytes of a damaged Parquet file of ``kind``; ``wrong``: the table with the wrong schema."""
    whole = parquet_bytes(good)
    return {
        "not_format": b"url,text\nhttp://x/1.jpg,a cat\n",  # a CSV named .parquet
        "empty": b"",
        "cut": whole[: len(whole) // 2],
        "wrong_schema": parquet_bytes(wrong if wrong is not None else pa.table({"link": ["x"], "caption": ["y"]})),
    }[kind]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err


def assert_stops_naming(rc: int, err: str, path) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("wit: error:")]
    assert rc == 2, err
    assert len(lines) == 1 and str(path) in lines[0], err
    assert "Traceback" not in err


def dataset_with_damaged_part(folder, kind: str, good: pa.Table, wrong: pa.Table | None = None):
    """A Spark-style dataset folder: a good part and a damaged one; returns the damaged part's path."""
    folder.mkdir(parents=True)
    pq.write_table(good, folder / "part-00000.parquet")
    bad = folder / "part-00001.parquet"
    bad.write_bytes(damaged_parquet(kind, good, wrong))
    return bad


# --------------------------------------------------------------------------- stages that stop
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stage", ["filter", "match", "balance", "download"])
def test_dataset_stages_stop_naming_the_damaged_part(spark, tmp_path, capsys, stage, kind):
    bad = dataset_with_damaged_part(tmp_path / "in", kind, pairs_table())
    out = str(tmp_path / "out")
    (tmp_path / "q.txt").write_text("cat\nred\n")
    argv = {"filter": ["filter", str(tmp_path / "in")],
            "match": ["match", "--input", str(tmp_path / "in"), "--queries", str(tmp_path / "q.txt")],
            "balance": ["balance", "--input", str(tmp_path / "in")],
            "download": ["download", "--input", str(tmp_path / "in")]}[stage]
    rc, err = run_cli([*argv, "-o", out], capsys)
    assert_stops_naming(rc, err, bad)
    assert not os.path.exists(f"{out}/{ {'filter': 'filtered', 'match': 'matched', 'balance': 'balanced', 'download': 'shards'}[stage]}/_SUCCESS")


def test_download_of_a_file_that_is_not_parquet_is_one_line(tmp_path, capsys):
    """The issue's case: `wit download --input bad.parquet` gave nine frames ending in pyarrow's error."""
    bad = tmp_path / "bad.parquet"
    bad.write_text("hello\n")
    rc, err = run_cli(["download", "--input", str(bad), "-o", str(tmp_path / "o")], capsys)
    assert_stops_naming(rc, err, bad)
    assert "not a Parquet file" in err


@pytest.mark.parametrize("kind", KINDS)
def test_queries_stop_on_a_damaged_list_or_dump(tmp_path, capsys, kind):
    good = pa.table({"entry_id": pa.array([0, 1], pa.int32()), "entry": ["cat", "red"]})
    lst = tmp_path / "queries.parquet"
    lst.write_bytes(damaged_parquet(kind, good))
    rc, err = run_cli(["queries", "build", "--from-file", str(lst), "-o", str(tmp_path / "o")], capsys)
    assert_stops_naming(rc, err, lst)
    dump = tmp_path / "enwiki-latest-pages-articles1.xml-p1p41242.bz2"
    page = "<page><title>Cat</title><ns>0</ns><revision><text>a cat</text></revision></page>"
    dump.write_bytes({"not_format": b"<!doctype html><p>a saved page</p>", "empty": b"",
                      "cut": bz2.compress(f"<mediawiki>{page}</mediawiki>".encode())[:30],
                      "wrong_schema": bz2.compress(f"<feed>{page}</feed>".encode())}[kind])
    rc, err = run_cli(["queries", "build", "--sources", "unigrams", "--wikipedia", str(dump),
                       "-o", str(tmp_path / "o2")], capsys)
    assert_stops_naming(rc, err, dump)


@pytest.mark.parametrize("kind", KINDS)
def test_crawl_seeds_stop(tmp_path, capsys, kind):
    seeds = tmp_path / ("seeds.parquet" if kind in ("cut", "wrong_schema") else "seeds.txt")
    seeds.write_bytes({"not_format": gzip.compress(b"http://127.0.0.1:9/\n"), "empty": b"",
                       "cut": damaged_parquet("cut", pa.table({"url": ["http://127.0.0.1:9/"] * 50})),
                       "wrong_schema": damaged_parquet("wrong_schema", pairs_table())}[kind])
    rc, err = run_cli(["crawl", str(seeds), "-o", str(tmp_path / "o")], capsys)
    assert_stops_naming(rc, err, seeds)


def shards_folder(folder, n_shards: int = 2):
    samples = [{"text": f"a red cat {i}", "image": jpeg(32, 32, i)} for i in range(4 * n_shards)]
    write_shards(folder, samples, shard_size=4)
    return folder


def damage_shard(folder, kind: str):
    """Damage shard 00001: its tar (not a tar, empty, cut) or, for the wrong schema, its metadata."""
    tar = folder / "00001.tar"
    if kind == "wrong_schema":
        meta = folder / "00001.parquet"
        meta.write_bytes(parquet_bytes(pa.table({"link": ["x"]})))
        return meta
    whole = tar.read_bytes()
    tar.write_bytes({"not_format": b"PK\x03\x04 a zip file, not a tar", "empty": b"", "cut": whole[: len(whole) // 2]}[kind])
    return tar


@pytest.mark.parametrize("kind", KINDS)
def test_select_stops_naming_the_damaged_shard(spark, tmp_path, capsys, kind):
    shards = shards_folder(tmp_path / "shards")
    bad = damage_shard(shards, kind)
    scores = tmp_path / "scores"
    scores.mkdir()
    rc, err = run_cli(["select", "--input", str(shards), "--scores", str(scores), "-o", str(tmp_path / "o")], capsys)
    assert_stops_naming(rc, err, bad)


@pytest.mark.parametrize("kind", ["not_format", "empty", "cut"])
def test_score_scores_what_is_readable_and_names_the_damaged_shard(tmp_path, capsys, kind):
    """Score keeps the samples before a cut (as a killed write leaves them); the shard is named in the
    stats, and select counts its unscored samples as score_error."""
    shards = shards_folder(tmp_path / "shards")
    bad = damage_shard(shards, kind)
    rc, err = run_cli(["score", "--input", str(shards), "-o", str(tmp_path / "o")], capsys)
    assert rc == 0, err
    st = json.loads((tmp_path / "o" / "scores" / "_stats.json").read_text())
    assert [(d["path"], d["reason"]) for d in st["extra"]["damaged_shards"]] == [
        (str(bad), {"not_format": "not_format", "empty": "empty", "cut": "truncated"}[kind])]
    assert 4 <= st["output_rows"] < 8  # shard 0 whole, shard 1 only up to the damage
    assert str(bad) in err


def test_score_drops_samples_of_a_tar_with_the_wrong_schema(tmp_path, capsys):
    """Score reads only the tars: one holding files that are not samples (no image) is read whole,
    its members dropped with a reason in the stats; the other shard is scored."""
    shards = shards_folder(tmp_path / "shards")
    with tarfile.open(shards / "00001.tar", "w") as tf:
        for name, data in (("README.md", b"not a sample"), ("000010004.txt", b"a caption without its image")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    rc, err = run_cli(["score", "--input", str(shards), "-o", str(tmp_path / "o")], capsys)
    assert rc == 0, err
    st = json.loads((tmp_path / "o" / "scores" / "_stats.json").read_text())
    assert st["output_rows"] == 4 and sum(st["drops"].values()) >= 1, st


@pytest.mark.parametrize("kind", KINDS)
def test_select_stops_on_damaged_scores(spark, tmp_path, capsys, kind):
    shards = shards_folder(tmp_path / "shards", 1)
    scores = tmp_path / "scores"
    scores.mkdir()
    keys = pq.read_table(shards / "00000.parquet").column("key")
    good = pa.table({"key": keys, "clip_score": pa.array([0.3] * len(keys), pa.float32())})
    bad = scores / "00000.parquet"
    bad.write_bytes(damaged_parquet(kind, good, pa.table({"key": keys})))
    rc, err = run_cli(["select", "--input", str(shards), "--scores", str(scores), "-o", str(tmp_path / "o")], capsys)
    assert_stops_naming(rc, err, bad)


@pytest.mark.parametrize("kind", ["not_format", "empty", "cut"])
def test_train_stops_naming_the_damaged_shard(tmp_path, capsys, kind):
    """A training shard is any tar (samples without an image or a caption are the loader's drops), so
    its "wrong schema" is not a file check; the other three damages stop before the model is built."""
    shards = shards_folder(tmp_path / "final")
    bad = damage_shard(shards, kind)
    rc, err = run_cli(["train", "--input", str(shards), "-o", str(tmp_path / "o"), "--steps", "1"], capsys)
    assert_stops_naming(rc, err, bad)


def test_damage_inside_a_file_found_by_spark_is_one_line(spark, tmp_path, capsys):
    """Header, footer and schema intact, data pages scrambled: no cheap check sees it; the Spark job
    fails reading it, and the CLI prints Spark's own naming of the file as one line."""
    folder = tmp_path / "in"
    folder.mkdir()
    t = pa.table({"url": [f"http://x/{i}.jpg" for i in range(5000)], "text": [f"a cat number {i}" for i in range(5000)]})
    data = bytearray(parquet_bytes(t))
    for i in range(100, 20000, 7):
        data[i] ^= 0x5A
    bad = folder / "part-00000.parquet"
    bad.write_bytes(bytes(data))
    assert inputs.parquet_problem(str(bad), ["url", "text"]) is None
    rc, err = run_cli(["filter", str(folder), "-o", str(tmp_path / "o")], capsys)
    assert_stops_naming(rc, err, bad)
    assert "FAILED_READ_FILE" in err


# --------------------------------------------------------------------------- stages that skip
@pytest.fixture(scope="module")
def extract_run(spark, tmp_path_factory):
    """One extract over a real WARC and the four damaged files beside it."""
    if not os.path.isfile(REAL_WARC):
        pytest.skip("real WARC data absent (/work/shared/data)")
    d = tmp_path_factory.mktemp("extract_in")
    whole = open(REAL_WARC, "rb").read()
    files = {"not_format": ("notes.warc.gz", b"these are notes, not WARC records\n"),
             "empty": ("empty.warc.gz", b""),
             "cut": ("cut.warc.gz", whole[: len(whole) // 2]),
             "wrong_schema": ("urls.parquet", parquet_bytes(pa.table({"link": ["http://x/1.jpg"]})))}
    for name, data in files.values():
        (d / name).write_bytes(data)
    out = tmp_path_factory.mktemp("extract_out")
    rc = main(["extract", REAL_WARC, *(str(d / n) for n, _ in files.values()), "-o", str(out)])
    stats = json.loads((out / "candidates" / "_stats.json").read_text())
    return rc, stats, {k: str(d / n) for k, (n, _) in files.items()}


@pytest.mark.parametrize("kind,reason", [("not_format", "not_warc"), ("empty", "empty_file"), ("cut", "truncated_gzip"),
                                         ("wrong_schema", "no_url_column")])
def test_extract_skips_damaged_files_with_a_reason(extract_run, kind, reason):
    rc, stats, paths = extract_run
    assert rc == 0 and stats["output_rows"] > 0  # the good WARC's pairs are kept
    per_file = {f["path"]: f for f in stats["extra"]["per_file"]}
    assert reason in per_file[paths[kind]]["errors"]
    assert stats["extra"]["errors"][reason] >= 1


@pytest.mark.parametrize("kind", KINDS)
def test_report_skips_damaged_files_naming_them(tmp_path, capsys, kind):
    """The report is a view: a damaged stats or scores file costs its section (named in the page and
    in the result), never the page."""
    stats = tmp_path / "candidates" / "_stats.json"
    stats.parent.mkdir()
    good = {"stage": "extract", "input_rows": 3, "output_rows": 2, "drops": {}, "duration_s": 1.0}
    stats.write_text({"not_format": "stage: extract\n", "empty": "", "cut": json.dumps(good)[:20],
                      "wrong_schema": json.dumps(good)}[kind])
    scores = tmp_path / "scores"
    scores.mkdir()
    bad = scores / "00000.parquet"
    bad.write_bytes(damaged_parquet(kind, pa.table({"uid": ["a"], "clip_score": pa.array([0.3], pa.float32())})))
    rc, out = main(["report", "--input", str(tmp_path)]), capsys.readouterr()
    assert rc == 0 and "Traceback" not in out.err
    page = (tmp_path / "report.html").read_text()
    if kind != "wrong_schema":
        assert str(bad) in page and str(stats) in page
    else:  # well-formed files without the columns a section needs: the section says what it lacks
        assert "Traceback" not in page


# --------------------------------------------------------------------------- the checker itself
def test_check_parquet_inputs_reports_each_file(tmp_path):
    good = pairs_table()
    paths = []
    for kind in ["good", *KINDS]:
        p = tmp_path / f"{kind}.parquet"
        p.write_bytes(parquet_bytes(good) if kind == "good" else damaged_parquet(kind, good))
        paths.append(str(p))
    found = {os.path.basename(p): reason for p, reason, _ in inputs.check_parquet_inputs(paths, ["url", "text"])}
    assert found == {"not_format.parquet": "not_format", "empty.parquet": "empty", "cut.parquet": "truncated",
                     "wrong_schema.parquet": "wrong_schema"}


def test_check_parquet_types(tmp_path):
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"url": ["u"], "text": ["t"], "keep_prob": [[1]]}), p)
    schema = pa.schema([pa.field("keep_prob", pa.float64())])
    assert inputs.parquet_problem(str(p), ["url"], schema)[0] == "wrong_schema"


def test_tar_problem(tmp_path):
    whole = tmp_path / "a.tar"
    with tarfile.open(whole, "w") as tf:
        info = tarfile.TarInfo("k.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"cat"))
    assert inputs.tar_problem(str(whole)) is None
    data = whole.read_bytes()
    empty_archive = tmp_path / "none.tar"
    with tarfile.open(empty_archive, "w"):
        pass
    assert inputs.tar_problem(str(empty_archive)) is None  # a shard whose every download failed
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[:1024])  # cut at a block boundary: no end-of-archive blocks
    assert inputs.tar_problem(str(cut))[0] == "truncated"
