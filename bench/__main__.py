"""Run the benchmarks: `python -m bench [area ...] [--quick] [--device cuda]`.

Each area is a module bench/<area>.py with ``main(quick=False, **kw) -> dict`` that measures ours
and a baseline in the same run, prints the ratios and writes bench/results/<area>.json.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import time
import traceback
from pathlib import Path

import pipeline  # noqa: F401  (first: its __init__ sets img2dataset's import environment)

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

AREAS = [p.stem for p in sorted(Path(__file__).parent.glob("*.py")) if not p.stem.startswith("_")]


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("areas", nargs="*", help=f"which benchmarks (default: all CPU ones): {', '.join(AREAS)}")
    ap.add_argument("--quick", action="store_true", help="small sizes, seconds not minutes")
    ap.add_argument("--device", default=None, help="cpu or cuda, for the model benchmarks")
    args = ap.parse_args()
    areas = args.areas or AREAS
    failed = []
    for area in areas:
        if area not in AREAS:
            print(f"unknown benchmark {area!r}; known: {', '.join(AREAS)}", file=sys.stderr)
            return 2
        mod = importlib.import_module(f"bench.{area}")
        kw = {"quick": args.quick}
        if args.device and "device" in inspect.signature(mod.main).parameters:
            kw["device"] = args.device
        print(f"=== bench {area} ===", flush=True)
        t0 = time.perf_counter()
        try:
            mod.main(**kw)
        except Exception:
            traceback.print_exc()
            failed.append(area)
        print(f"=== {area} took {time.perf_counter() - t0:.0f}s ===", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
