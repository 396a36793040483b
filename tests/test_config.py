"""Run config: YAML + overrides, validated with messages that name the bad key."""

import pytest

from pipeline.config import RunConfig, dump_config, load_config, parse_override
from pipeline.errors import ConfigError


def test_defaults_are_valid_and_fit_a_small_machine():
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert cfg.spark.master == "local[*]"
    assert cfg.download.shard_size == 10_000
    assert cfg.balance.t == 20_000
    assert cfg.queries.budget == 500_000
    assert cfg.path("candidates").endswith("wit_out/candidates")


def test_yaml_file_and_overrides(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("output_dir: /data/run1\ndownload:\n  threads: 8\n  image_size: 128\n")
    cfg = load_config(p, ["download.threads=16", "balance.tail_share=0.06", "filter.languages=[en, de]"])
    assert cfg.output_dir == "/data/run1"
    assert cfg.download.threads == 16  # CLI wins over the file
    assert cfg.download.image_size == 128
    assert cfg.balance.tail_share == pytest.approx(0.06)
    assert cfg.filter.languages == ["en", "de"]


def test_override_values_are_typed():
    assert parse_override("download.threads=8") == ("download.threads", 8)
    assert parse_override("score.pretrained=null") == ("score.pretrained", None)
    assert parse_override("spark.master=local[2]") == ("spark.master", "local[2]")
    assert parse_override("extract.inputs=[a.warc, b.wat]") == ("extract.inputs", ["a.warc", "b.wat"])


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["download.thraeds=8"], "download.thraeds: unknown key"),
        (["download.threads=many"], "download.threads"),
        (["download.threads=0"], "download.threads"),
        (["nosuchsection.x=1"], "nosuchsection: unknown key"),
        (["balance.tail_share=1.5"], "balance.tail_share"),
        (["download.resize_mode=stretch"], "download.resize_mode"),
        (["output_dir= "], "output_dir"),
        (["threads"], "expected KEY=VALUE"),
        (["download=3"], "download"),
    ],
)
def test_bad_values_name_the_key(overrides, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("download: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_dump_round_trips(tmp_path):
    cfg = load_config(None, ["download.threads=3", "select.threshold=0.28"])
    p = tmp_path / "dumped.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg
