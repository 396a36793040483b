"""spark-submit entry point of `wit download`: spark-submit jobs/download.py -c run.yaml [--input PATH] [--output PATH] [--retry-failed]

Takes the same options as `wit download` (`--help` lists them); spark-submit's --master and --conf win.
"""

import os
import sys

# spark-submit puts jobs/ first on sys.path, where jobs/select.py would shadow the standard `select`
# module (socket imports it): take the folder off before anything else is imported.
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != os.path.dirname(os.path.realpath(__file__))]

from pipeline.cli import job_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(job_main("download", "download.py"))
