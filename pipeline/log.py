"""Progress output for long work: timestamped lines on stderr, rate-limited counters."""

from __future__ import annotations

import sys
import time


def info(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} WARNING: {msg}", file=sys.stderr, flush=True)


class Progress:
    """Counts work done and prints `what: n/total (rate/s)` at most every ``every_s`` seconds."""

    def __init__(self, what: str, total: int | None = None, every_s: float = 5.0, unit: str = "items"):
        self.what, self.total, self.every_s, self.unit = what, total, every_s, unit
        self.n = 0
        self.t0 = self._last = time.perf_counter()

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            self._print(now)

    def _print(self, now: float) -> None:
        rate = self.n / max(now - self.t0, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        info(f"{self.what}: {self.n}{of} {self.unit} ({rate:,.1f}/s)")

    def done(self) -> None:
        self._print(time.perf_counter())
