"""spark-submit entry point of `wit select` (named so it cannot shadow the stdlib `select` module on sys.path):

    spark-submit jobs/select_final.py -c run.yaml [--shards DIR] [--scores DIR] [--output DIR]
"""

import sys

from pipeline.cli import config_from_args, job_parser, run_job
from pipeline.select import run_select
from pipeline.spark import get_spark
from pipeline.stats import summary_line


def main(argv=None) -> int:
    p = job_parser("select_final.py", __doc__)
    p.add_argument("--shards", help="download shards (default: <output_dir>/shards)")
    p.add_argument("--scores", help="scores (default: <output_dir>/scores)")
    p.add_argument("--output", help="output folder (default: <output_dir>/final)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    spark = get_spark(cfg.spark, submitted=True)
    d = run_select(cfg, spark, shards_dir=args.shards, scores_dir=args.scores, out_dir=args.output, overwrite=args.overwrite)
    print(summary_line(d))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
