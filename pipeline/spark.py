"""Build the Spark session: local[*] by default, a cluster via --master/config; checks Java first."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from pipeline.config import SparkConfig
from pipeline.errors import UserError

MIN_JAVA = 17


def java_version() -> int | None:
    """Major version of the java on JAVA_HOME or PATH, or None when there is none."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.path.exists(java):
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major  # "1.8" → 8


def check_java() -> None:
    v = java_version()
    if v is None:
        raise UserError(f"Java not found: Spark 4 needs Java {MIN_JAVA}+ (install openjdk-17-jre or set JAVA_HOME)")
    if v < MIN_JAVA:
        raise UserError(f"Java {v} found, but Spark 4 needs Java {MIN_JAVA}+ (install openjdk-17-jre or set JAVA_HOME)")


def spark_conf_pairs(cfg: SparkConfig) -> dict[str, str]:
    """All spark.* settings for a run config (also what jobs/ pass to spark-submit)."""
    conf = {
        "spark.driver.memory": cfg.driver_memory,
        "spark.executor.memory": cfg.executor_memory,
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        # Our tasks are few and long (one per input file or shard): don't let Spark merge them.
        "spark.sql.files.maxPartitionBytes": "64m",
        "spark.python.worker.reuse": "true",
    }
    conf.update(cfg.conf)
    return conf


def get_spark(cfg: SparkConfig, master: str | None = None, submitted: bool = False):
    """Return a (possibly already running) SparkSession built from the config; quiet logs.

    ``submitted=True`` (jobs/ under spark-submit) leaves the master to spark-submit's --master.
    """
    check_java()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(cfg.app_name)
    # Under spark-submit the master is already set; only override when asked or when running bare.
    chosen = master or (None if submitted else cfg.master)
    if chosen:
        builder = builder.master(chosen)
        if chosen.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no "hostname resolves to loopback" noise
    log4j = os.path.join(os.path.dirname(__file__), "log4j2.properties")
    if cfg.log_level in ("ERROR", "WARN") and "spark.driver.extraJavaOptions" not in cfg.conf:
        builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log4j}")
    from pipeline import storage

    conf = {**storage.spark_conf(), **spark_conf_pairs(cfg)}
    if submitted:  # spark-submit's own --conf / --executor-memory win over the config's defaults
        from pyspark import SparkConf

        given = SparkConf()
        conf = {k: v for k, v in conf.items() if not given.contains(k)}
    for k, v in conf.items():
        builder = builder.config(k, v)
    try:
        spark = builder.getOrCreate()
    except Exception as e:  # JVM start failures are user-environment problems
        raise UserError(f"could not start Spark ({chosen or 'spark-submit master'}): {str(e).splitlines()[0]}") from None
    spark.sparkContext.setLogLevel(cfg.log_level)
    return spark

