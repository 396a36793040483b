"""Entry point of `wit train` for clusters: python jobs/train.py -c run.yaml, or multi-GPU with
torchrun --nproc_per_node 8 jobs/train.py -c run.yaml (training needs no Spark session).

Takes the same options as `wit train` (`--help` lists them).
"""

import sys

from pipeline.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("train"))
