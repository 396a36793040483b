"""spark-submit entry point of `wit download`: spark-submit jobs/download.py -c run.yaml [--input PATH] [--output PATH] [--retry-failed]

Takes the same options as `wit download` (`--help` lists them); spark-submit's --master and --conf win.
"""

import sys

from pipeline.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("download"))
