"""Per-stage stats: rows in and out, drops by reason, stage figures; written as _stats.json beside the data.

Every dropped row lands in some stage's ``drops`` under the name of what dropped it, so the
report's funnel accounts for every input row.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline import storage

STATS_FILE = "_stats.json"  # leading "_": Spark and pyarrow skip it when reading the dataset folder


@dataclass
class StageStats:
    stage: str
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    input_rows: int | None = None
    output_rows: int | None = None
    drops: Counter = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    def drop(self, reason: str, n: int = 1) -> None:
        if n:  # a reason that dropped nothing is not listed
            self.drops[reason] += n

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "started_at": self.started_at,
            "duration_s": round(time.perf_counter() - self._t0, 3),
            "input_rows": self.input_rows,
            "output_rows": self.output_rows,
            "drops": dict(sorted(self.drops.items())),
            "extra": self.extra,
        }

    def write(self, folder: str) -> dict[str, Any]:
        d = self.as_dict()
        storage.write_json(f"{folder.rstrip('/')}/{STATS_FILE}", d)
        return d


def read_stats(folder: str) -> dict[str, Any] | None:
    path = f"{folder.rstrip('/')}/{STATS_FILE}"
    return storage.read_json(path) if storage.exists(path) else None


def summary_line(d: dict[str, Any]) -> str:
    """One human line for a stage's stats (printed by the CLI and `wit run`)."""
    drops = ", ".join(f"{k}={v}" for k, v in sorted(d.get("drops", {}).items(), key=lambda kv: -kv[1])[:6])
    io = f"{d.get('input_rows')} → {d.get('output_rows')}"
    return f"[{d['stage']}] {io} rows in {d['duration_s']:.1f}s" + (f"; dropped: {drops}" if drops else "")


def dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, indent=2, sort_keys=True, default=str)
