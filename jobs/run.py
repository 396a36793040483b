"""spark-submit entry point of `wit run`: spark-submit --master spark://host:7077 jobs/run.py -c run.yaml [--from STAGE] [--to STAGE]

Takes the same options as `wit run` (`--help` lists them); spark-submit's --master and --conf win.
"""

import sys

from pipeline.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("run"))
