"""The one run config: a YAML file plus CLI overrides, validated at load with messages naming the bad key.

Every stage reads its own section (``cfg.extract``, ``cfg.download`` …). Paths default to folders
under ``output_dir`` so a whole run needs nothing but ``output_dir``; any path may be an fsspec URL.
Defaults fit a 2-core / 24 GiB machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from pipeline.config_sections import (  # noqa: F401 - re-exported: every section is pipeline.config's
    BalanceConfig,
    CrawlConfig,
    DownloadConfig,
    ExtractConfig,
    FilterConfig,
    MatchConfig,
    QueriesConfig,
    ReportConfig,
    RobotsConfig,
    SafetyPrompts,
    SampleConfig,
    ScoreConfig,
    Section,
    SelectConfig,
    ServeConfig,
    SparkConfig,
    StorageConfig,
    TrainConfig,
)
from pipeline.errors import ConfigError


class RunConfig(Section):
    output_dir: str = Field("wit_out", validate_default=True)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    crawl: CrawlConfig = Field(default_factory=CrawlConfig)
    robots: RobotsConfig = Field(default_factory=RobotsConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    queries: QueriesConfig = Field(default_factory=QueriesConfig)
    match: MatchConfig = Field(default_factory=MatchConfig)
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    download: DownloadConfig = Field(default_factory=DownloadConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)

    @field_validator("output_dir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        """Local paths become absolute: Spark executors on a cluster resolve relative ones in their work dirs."""
        if not v.strip():
            raise ValueError("must not be empty")
        return v if "://" in v else os.path.abspath(os.path.expanduser(v))

    def path(self, name: str) -> str:
        """Default location of a stage's dataset: ``<output_dir>/<name>``."""
        return join_path(self.output_dir, name)


def join_path(base: str, *parts: str) -> str:
    """Join path parts for local paths and URLs alike (``s3://b/x`` + ``y`` → ``s3://b/x/y``)."""
    out = base.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        got = e.get("input")
        got_s = "" if e["type"] == "extra_forbidden" or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{key}: {msg}{got_s}")
    return "; ".join(lines)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"config error: {dotted}: {k} is not a section")
        node = nxt
    node[keys[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """``stage.key=value`` → (key, YAML-parsed value); ``download.threads=8`` gives an int."""
    if "=" not in item:
        raise ConfigError(f"config error: --set {item!r}: expected KEY=VALUE, e.g. download.threads=8")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"config error: --set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | dict[str, Any] | None = None) -> RunConfig:
    """Load and validate a run config; raise ConfigError naming the bad key on any problem."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config error: config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config error: {p} is not valid YAML: {e}".splitlines()[0]) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config error: {p} must hold a mapping of sections, got {type(loaded).__name__}")
        data = loaded
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in (overrides or [])]
    for key, value in items:
        _set_dotted(data, key, value)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"config error: {_format_validation_error(e)}") from None


def dump_config(cfg: RunConfig) -> str:
    """The config as YAML (written beside every run's outputs, shown in the report)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
