"""spark-submit entry point of `wit extract`: spark-submit jobs/extract.py -c run.yaml [inputs…]."""

import sys

from pipeline.cli import config_from_args, job_parser, run_job
from pipeline.errors import UserError
from pipeline.extract import run_extract
from pipeline.spark import get_spark
from pipeline.stats import summary_line


def main(argv=None) -> int:
    p = job_parser("extract.py", __doc__)
    p.add_argument("inputs", nargs="*", help="input files/globs/URLs/paths files (default: config extract.inputs)")
    p.add_argument("--output", help="output folder (default: <output_dir>/candidates)")
    p.add_argument("--overwrite", action="store_true", help="redo a complete output")
    args = p.parse_args(argv)
    try:
        cfg = config_from_args(args)
        spark = get_spark(cfg.spark, submitted=True)
        stats = run_extract(cfg, spark, inputs=args.inputs or None, output=args.output, overwrite=args.overwrite)
    except UserError as e:
        print(f"extract: error: {e}", file=sys.stderr)
        return 2
    print(summary_line(stats))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
