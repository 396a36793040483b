"""spark-submit entry point of `wit run` (the whole pipeline):

    spark-submit --master spark://host:7077 jobs/run.py -c run.yaml [--from STAGE] [--to STAGE]
"""

import sys

from pipeline.cli import config_from_args, job_parser, run_job
from pipeline.run import STAGE_NAMES, choose_stages, run_pipeline


def main(argv=None) -> int:
    p = job_parser("run.py", __doc__)
    p.add_argument("--from", dest="from_", choices=STAGE_NAMES)
    p.add_argument("--to", choices=STAGE_NAMES)
    p.add_argument("--only", nargs="+", choices=STAGE_NAMES)
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    run_pipeline(cfg, choose_stages(args.from_, args.to, args.only), submitted=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
