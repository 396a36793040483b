"""spark-submit entry point of `wit filter`: spark-submit jobs/filter.py -c run.yaml [input]."""

import sys

from pipeline.caption_filter import run_filter
from pipeline.cli import config_from_args, job_parser, run_job
from pipeline.spark import get_spark
from pipeline.stats import summary_line


def main(argv=None) -> int:
    p = job_parser("filter.py", __doc__)
    p.add_argument("input", nargs="?", help="input dataset (default: <output_dir>/candidates)")
    p.add_argument("--output", help="output folder (default: <output_dir>/filtered)")
    p.add_argument("--dropped-output", help="folder for dropped rows (default: <output_dir>/dropped/filter)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    spark = get_spark(cfg.spark, submitted=True)
    stats = run_filter(cfg, spark, input_path=args.input, output=args.output,
                       dropped_output=args.dropped_output, overwrite=args.overwrite)
    print(summary_line(stats))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
