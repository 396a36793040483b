"""spark-submit entry point of `wit queries build`: spark-submit jobs/queries.py -c run.yaml [--output PATH] [--set queries.wikipedia=…]

Takes the same options as `wit queries build` (`--help` lists them); spark-submit's --master and --conf win.
"""

import sys

from pipeline.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("queries"))
