"""spark-submit entry point of `wit queries build`: spark-submit jobs/queries.py -c run.yaml [--set queries.wikipedia=…]."""

import sys

from pipeline.cli import config_from_args, job_parser, run_job
from pipeline.queries import run_queries
from pipeline.spark import get_spark
from pipeline.stats import summary_line


def main(argv=None) -> int:
    p = job_parser("queries.py", __doc__)
    p.add_argument("--output", help="output folder (default: <output_dir>/queries)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    spark = get_spark(cfg.spark, submitted=True)
    print(summary_line(run_queries(cfg, spark, output=args.output, overwrite=args.overwrite)))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
