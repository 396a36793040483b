"""Entry point of `wit train` for clusters: python jobs/train.py -c run.yaml, or multi-GPU with
torchrun --nproc_per_node 8 jobs/train.py -c run.yaml (training needs no Spark session).

Takes the same options as `wit train` (`--help` lists them).
"""

import os
import sys

# spark-submit puts jobs/ first on sys.path, where jobs/select.py would shadow the standard `select`
# module (socket imports it): take the folder off before anything else is imported.
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != os.path.dirname(os.path.realpath(__file__))]

from pipeline.cli import job_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(job_main("train", "train.py"))
