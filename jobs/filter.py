"""spark-submit entry point of `wit filter`: spark-submit jobs/filter.py -c run.yaml [INPUT] [--output PATH] [--dropped-output PATH]

Takes the same options as `wit filter` (`--help` lists them); spark-submit's --master and --conf win.
"""

import sys

from pipeline.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("filter"))
