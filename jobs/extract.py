"""spark-submit entry point of `wit extract`: spark-submit jobs/extract.py -c run.yaml [INPUT…] [--output PATH]

Takes the same options as `wit extract` (`--help` lists them); spark-submit's --master and --conf win.
"""

import sys

from pipeline.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("extract"))
