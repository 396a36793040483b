"""Entry point of `wit train` for clusters: python jobs/train.py -c run.yaml, or multi-GPU with
torchrun --nproc_per_node 8 jobs/train.py -c run.yaml (training needs no Spark session)."""

import json
import sys

from pipeline.cli import config_from_args, job_parser, run_job
from pipeline.train import run_train


def main(argv=None) -> int:
    p = job_parser("train.py", __doc__)
    p.add_argument("--data", help="webdataset shards (default: config train.data or <output_dir>/final)")
    p.add_argument("--output", help="output folder (default: <output_dir>/train)")
    p.add_argument("--resume", action="store_true", help="continue the unfinished run (error if none)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    summary = run_train(cfg, data=args.data, out=args.output, resume=True if args.resume else None, overwrite=args.overwrite)
    print(json.dumps({k: v for k, v in summary.items() if k != "drops"}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
