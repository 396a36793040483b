"""spark-submit entry point of `wit score`: spark-submit jobs/score.py -c run.yaml [--input SHARDS] [--output PATH].

Runs in Spark mode (one task per shard, the model loaded once per Python worker). On a GPU cluster:
  spark-submit --conf spark.executor.resource.gpu.amount=1 --conf spark.task.resource.gpu.amount=1 \\
    --conf spark.executor.resource.gpu.discoveryScript=$SPARK_HOME/examples/src/main/scripts/getGpusResources.sh \\
    jobs/score.py -c run.yaml --set score.pretrained=laion2b_s34b_b79k
Each task then scores on the GPU Spark assigned it (TaskContext resources). Takes the same options as
`wit score`; spark-submit's --master and --conf win.
"""

import sys

from pipeline.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("score"))
