"""Progress a person can follow while a long stage runs: done/total, rate, failures by reason, ETA.

In a terminal it is a tqdm bar; otherwise (a log file, a cluster's driver log) a plain line every
``every_s`` seconds and one at the end. The numbers come from the executors without the tasks doing
any extra work, polled by a driver thread:
- rows, through the status files the tasks already write when a part is done (download's
  ``NNNNN_stats.json``: ``watch_folder``);
- Spark tasks, through Spark's status tracker (``with_task_progress``: every stage, via the stage
  executor in pipeline/stage.py), the way Spark's console progress bar counts; it stays quiet while
  a stage shows its own rows.
Work counted in a loop of this process (the sample web's pages, scoring's batches) calls
``Progress.add`` as it goes. Plain messages (``info``, ``warn``) are pipeline/log.py's.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TextIO

from pipeline import storage

EVERY_S = 30.0  # plain lines: often enough to see a stage move, rare enough for a long log


def _duration(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def status_line(what: str, done: int, total: int | None, rate: float, failures: Counter, unit: str = "rows") -> str:
    """``download: 1,200/5,000 rows (24%), 35.2 rows/s, failed: timeout=3 not_image=2, ETA 1m48s``."""
    of = f"/{total:,}" if total else ""
    pct = f" ({100 * done / total:.0f}%)" if total else ""
    failed = " ".join(f"{k}={v}" for k, v in failures.most_common(5))
    eta = f", ETA {_duration((total - done) / rate)}" if total and rate > 0 and done < total else ""
    return f"{what}: {done:,}{of} {unit}{pct}, {rate:,.1f} {unit}/s" + (f", failed: {failed}" if failed else "") + eta


class Progress:
    """Shows progress: absolute (``update(done, failures)``, from status files or Spark) or counted
    (``add(k)``, from a loop); a bar on a TTY, else periodic plain lines. ``close()`` ends it."""

    def __init__(self, what: str, total: int | None, unit: str = "rows", stream: TextIO | None = None,
                 every_s: float = EVERY_S, tty: bool | None = None):
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.done, self.failures = 0, Counter()
        self._t0 = self._last = time.perf_counter()
        self._start_done: int | None = None  # parts done before this run (a resumed stage) are not this run's rate
        self._bar = None  # made at the first update: a stage that never reports draws nothing

    def rate(self) -> float:
        elapsed = time.perf_counter() - self._t0
        return (self.done - (self._start_done or 0)) / elapsed if elapsed > 0 else 0.0

    def update(self, done: int, failures: Counter | None = None) -> None:
        if self._start_done is None:
            self._start_done = done
        self.done, self.failures = done, Counter(failures or {})
        if self.tty and self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=self.what, unit=f" {self.unit}", file=self.stream,
                             dynamic_ncols=True, unit_scale=True)
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.update(done - self._bar.n)
            if self.failures:
                self._bar.set_postfix_str("failed: " + " ".join(f"{k}={v}" for k, v in self.failures.most_common(3)))
        elif time.perf_counter() - self._last >= self.every_s:
            self._print()

    def add(self, k: int = 1) -> None:
        """Count ``k`` more done (a count that starts at zero)."""
        if self._start_done is None:
            self._start_done = 0
        self.update(self.done + k, self.failures)

    def _print(self) -> None:
        self._last = time.perf_counter()
        line = status_line(self.what, self.done, self.total, self.rate(), self.failures, self.unit)
        print(f"{time.strftime('%H:%M:%S')} {line}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.refresh()
            self._bar.close()
        elif not self.tty:
            self._print()


_row_watches: list[Watch] = []  # row-level watches running now (download's): task progress stays quiet


class Watch:
    """A daemon thread that calls ``poll() -> (done, total, failures)`` (or ``(done, failures)``: the total
    given to ``progress``) every ``poll_s`` and shows it; a context manager. ``defer``: show nothing while a
    row-level watch (``defer=False``) runs, and nothing at all if there was never anything to count."""

    def __init__(self, progress: Progress, poll: Callable[[], tuple], poll_s: float = 2.0, defer: bool = False):
        self.progress, self.poll, self.poll_s, self.defer = progress, poll, poll_s, defer
        self._shown = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{progress.what}", daemon=True)

    def _show(self) -> None:
        got = self.poll()
        if self.defer and (_row_watches or not got[0] and not got[1]):
            return
        if len(got) == 3:
            self.progress.total = got[1] or None
        self.progress.update(got[0], got[-1])
        self._shown = True

    def _run(self) -> None:
        while True:
            try:
                self._show()
            except Exception:  # a status file mid-write, a listing hiccup, Spark stopping: the next poll sees it
                pass
            if self._stop.wait(self.poll_s):
                return

    def __enter__(self) -> Watch:
        if not self.defer:
            _row_watches.append(self)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if not self.defer:
            _row_watches.remove(self)
        if exc[0] is None:
            try:
                self._show()
            except Exception:
                pass
        if self._shown and (exc[0] is None or not self.defer):
            self.progress.close()
        elif self.progress._bar is not None:  # a failed stage: its error is the last line, not a count
            self.progress._bar.close()


class StatusFiles:
    """Totals over the per-part status files in a folder (``*_stats.json`` with ``count`` and ``failures``).
    A file is read once: parts are written atomically and not changed while their stage runs."""

    def __init__(self, folder: str, pattern: str = "*_stats.json", done_key: str = "count", failures_key: str = "failures"):
        self.folder, self.pattern, self.done_key, self.failures_key = folder.rstrip("/"), pattern, done_key, failures_key
        self._seen: dict[str, tuple[int, Counter]] = {}

    def __call__(self) -> tuple[int, Counter]:
        fs, p = storage.fs_for(self.folder)
        for f in fs.glob(f"{p}/{self.pattern}"):
            if f not in self._seen:
                with fs.open(f, "r") as fh:
                    d = json.load(fh)
                self._seen[f] = (int(d.get(self.done_key, 0)), Counter(d.get(self.failures_key) or {}))
        failures: Counter = Counter()
        for _, c in self._seen.values():
            failures.update(c)
        return sum(n for n, _ in self._seen.values()), failures


def watch_folder(what: str, total: int | None, folder: str, unit: str = "rows", **kw) -> Watch:
    """Progress of a stage whose tasks drop a status file per part into ``folder`` (download's shards)."""
    return Watch(Progress(what, total, unit), StatusFiles(folder, **kw))


class SparkTasks:
    """``(done, total, failures)`` of the Spark tasks run since this object was made, from the status
    tracker (the driver's own bookkeeping: nothing asked of the executors). A stage that left the active
    list is counted as finished. None of it starts Spark: with no SparkContext it counts nothing."""

    def __init__(self):
        self._stages: dict[int, tuple[int, int, int]] = {}  # stage id → (completed, total, failed attempts)
        self._before: set[int] | None = None

    def __call__(self) -> tuple[int, int, Counter]:
        # Never import pyspark here: this thread would race the step's own first import of it (a partly
        # initialised module). Not imported yet means no SparkContext yet.
        context = getattr(sys.modules.get("pyspark.context"), "SparkContext", None)
        sc = getattr(context, "_active_spark_context", None)
        if sc is None and self._before is None:
            self._before = set()  # Spark starts after us (a step asking for ctx.spark): every stage is ours
        if sc is not None:
            tracker = sc.statusTracker()
            active = set(tracker.getActiveStageIds())
            if self._before is None:  # stages already running belong to whoever started them
                self._before = active
            for sid in list(self._stages):
                if sid not in active:
                    done, total, failed = self._stages[sid]
                    self._stages[sid] = (total, total, failed)
            for sid in active - self._before:
                info = tracker.getStageInfo(sid)
                if info is not None:
                    self._stages[sid] = (info.numCompletedTasks, info.numTasks, info.numFailedTasks)
        done = sum(d for d, _, _ in self._stages.values())
        total = sum(t for _, t, _ in self._stages.values())
        failed = sum(f for _, _, f in self._stages.values())
        return done, total, Counter({"task_retried": failed} if failed else {})


def with_task_progress(name: str, step: Callable[..., Any]) -> Callable[..., Any]:
    """``step`` with a progress line (or bar) of its Spark tasks while it runs (pipeline/stage.py wraps
    every stage's step so)."""
    import functools

    @functools.wraps(step)
    def watched(*args, **kw):
        with Watch(Progress(name, None, unit="tasks"), SparkTasks(), defer=True):
            return step(*args, **kw)

    return watched
