"""Spark's Python daemon for local runs: pyspark's own (``pyspark.daemon``), after importing once the
heavy modules that download's tasks use, so that every Python worker it forks has them.

Spark forks a Python worker from this daemon for each task slot (and again after an idle minute);
each fresh worker importing img2dataset (its writer imports webdataset, hence torch; its resizer
albumentations and OpenCV) spent ~5 s of CPU before its first image. Imported here, before any fork,
that is paid once per session, and the workers share the pages. ``pipeline.spark.get_spark`` names
this module as ``spark.python.daemon.module`` for local masters only: a cluster's executors may not
have ``pipeline`` importable before a task ships it.
"""

from __future__ import annotations

import os
import sys

PRELOAD = ("img2dataset.writer", "img2dataset.resizer")  # what download's tasks import (pipeline.images, .download)


def preload() -> None:
    """Import PRELOAD; a module that cannot be imported is left to the task that needs it (its error there).
    Whatever an import prints goes to stderr: the JVM reads the daemon's port from its stdout."""
    import importlib

    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the task that imports it reports the error
                pass
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


if __name__ == "__main__":
    preload()
    from pyspark import daemon

    daemon.manager()
