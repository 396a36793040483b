"""Shared fixtures: one local Spark session for the test run, the real data folder, free ports."""

from __future__ import annotations

import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real files no one here wrote); tests using it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def spark():
    """One local[2] Spark session for all tests (starting a JVM costs seconds)."""
    from pipeline.config import SparkConfig
    from pipeline.spark import get_spark

    session = get_spark(SparkConfig(master="local[2]", driver_memory="2g", shuffle_partitions=4))
    yield session
    session.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


@contextmanager
def served_sample_web(root: Path, n_pairs: int, seed: int, crawl_delay: float = 0.0):
    """Generate a sample web under ``root/sample`` for a free port and serve it there: (folder, server);
    ``crawl_delay``: the Crawl-delay its robots.txt asks (none by default)."""
    from pipeline.sample_web import SampleWebServer, generate_sample_web

    port = free_port()
    generate_sample_web(str(root / "sample"), n_pairs=n_pairs, seed=seed, base_url=f"http://127.0.0.1:{port}")
    with SampleWebServer(str(root / "sample" / "site"), port=port, crawl_delay=crawl_delay) as server:
        yield root / "sample", server


def query_sources() -> list[str]:
    """The offline query list sources: WordNet when Debian's wordnet-base is installed, plus wordfreq."""
    return (["wordnet"] if os.path.isdir("/usr/share/wordnet") else []) + ["wordfreq"]
