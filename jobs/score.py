"""spark-submit entry point of `wit score`: spark-submit jobs/score.py -c run.yaml [--input DIR] [--output DIR].

Runs in Spark mode (one task per shard, the model loaded once per Python worker). On a GPU cluster:
  spark-submit --conf spark.executor.resource.gpu.amount=1 --conf spark.task.resource.gpu.amount=1 \\
    --conf spark.executor.resource.gpu.discoveryScript=$SPARK_HOME/examples/src/main/scripts/getGpusResources.sh \\
    jobs/score.py -c run.yaml --set score.pretrained=laion2b_s34b_b79k
Each task then scores on the GPU Spark assigned it (TaskContext resources).
"""

import sys

from pipeline.cli import config_from_args, job_parser, run_job
from pipeline.score import run_score
from pipeline.spark import get_spark
from pipeline.stats import summary_line


def main(argv=None) -> int:
    p = job_parser("score.py", __doc__)
    p.add_argument("--input", help="download shards (default: <output_dir>/shards)")
    p.add_argument("--output", help="output folder (default: <output_dir>/scores)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    cfg.score.mode = "spark"
    spark = get_spark(cfg.spark, submitted=True)
    print(summary_line(run_score(cfg, spark, shards_dir=args.input, out_dir=args.output, overwrite=args.overwrite)))
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main))
