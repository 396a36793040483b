"""spark-submit entry point of `wit balance`: spark-submit jobs/balance.py -c run.yaml [--input PATH] [--output PATH]

Takes the same options as `wit balance` (`--help` lists them); spark-submit's --master and --conf win.
"""

import sys

from pipeline.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("balance"))
