"""Messages for a person: timestamped lines on stderr. Progress (bars, periodic lines) is pipeline/progress.py's."""

from __future__ import annotations

import sys
import time


def info(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} WARNING: {msg}", file=sys.stderr, flush=True)
