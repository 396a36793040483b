"""Benchmarks (`python -m bench`): ours against a baseline measured in the same run."""

import os
from pathlib import Path


def real_data() -> Path | None:
    """The folder of real test data (set WIT_REAL_DATA; `make bench` points it at the shared data), or None."""
    folder = os.environ.get("WIT_REAL_DATA")
    return Path(folder) if folder and Path(folder).is_dir() else None
