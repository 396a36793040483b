"""spark-submit entry point of every `wit` command: spark-submit jobs/wit.py STAGE -c run.yaml [options]

STAGE is any stage of `wit --help` (crawl, extract, filter, queries, match, balance, download, score, select,
train, eval, report) or `run` (all of them); the options are those of `wit STAGE`, and spark-submit's --master
and --conf win over the run config's. A new stage needs no file here: the stage table lists it.
"""

import sys

from pipeline.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main())
