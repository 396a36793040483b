"""spark-submit entry point of `wit match`: spark-submit jobs/match.py -c run.yaml [--input DIR] [--output DIR]."""

import sys

from pipeline.balance import run_match
from pipeline.cli import config_from_args, job_parser, run_job
from pipeline.spark import get_spark
from pipeline.stats import summary_line


def main(argv=None) -> int:
    p = job_parser("match.py", __doc__)
    p.add_argument("--input", help="input dataset (default: <output_dir>/filtered)")
    p.add_argument("--output", help="output folder (default: <output_dir>/matched)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    spark = get_spark(cfg.spark, submitted=True)
    print(summary_line(run_match(cfg, spark, input=args.input, output=args.output, overwrite=args.overwrite)))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
