"""spark-submit entry point of `wit download`: spark-submit jobs/download.py -c run.yaml [--input DIR]."""

import sys

from pipeline.cli import config_from_args, job_parser, run_job
from pipeline.download import run_download
from pipeline.spark import get_spark
from pipeline.stats import summary_line


def main(argv=None) -> int:
    p = job_parser("download.py", __doc__)
    p.add_argument("--input", help="input dataset (default: <output_dir>/balanced)")
    p.add_argument("--output", help="output folder (default: <output_dir>/shards)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--retry-failed", action="store_true", default=None,
                   help="refetch only the transient failures of complete shards")
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    spark = get_spark(cfg.spark, submitted=True)
    stats = run_download(cfg, spark, input_path=args.input, output=args.output,
                         retry_failed=args.retry_failed, overwrite=args.overwrite)
    print(summary_line(stats))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
