"""spark-submit entry point of `wit match`: spark-submit jobs/match.py -c run.yaml [--input PATH] [--output PATH]

Takes the same options as `wit match` (`--help` lists them); spark-submit's --master and --conf win.
"""

import sys

from pipeline.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("match"))
