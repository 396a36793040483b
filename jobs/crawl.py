"""spark-submit entry point of `wit crawl`: spark-submit jobs/crawl.py -c run.yaml [SEED…] [--output PATH]

Takes the same options as `wit crawl` (`--help` lists them); spark-submit's --master and --conf win.
"""

import sys

from pipeline.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("crawl"))
