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
SUBMITTED = False  # set by the jobs/*.py entry points: spark-submit chose the master


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
    submitted = submitted or SUBMITTED
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
            if "spark.python.daemon.module" not in cfg.conf:  # workers forked with img2dataset imported
                builder = builder.config("spark.python.daemon.module", "pipeline.spark_daemon")
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


def ui_line(spark) -> str:
    """Where a person follows the job: the Spark UI's address, or how to turn the UI on."""
    url = spark.sparkContext.uiWebUrl
    if url:
        return f"Spark UI: {url} (application {spark.sparkContext.applicationId})"
    return "Spark UI: off (set spark.conf {spark.ui.enabled: 'true'} in the run config to follow the job there)"


# --- datasets ------------------------------------------------------------------------------------
def read_parquet(spark, path: str):
    """A Parquet dataset folder or file; _stats.json and other non-Parquet files beside the data are skipped."""
    from pipeline import storage

    return spark.read.option("pathGlobFilter", "*.parquet").parquet(storage.to_spark_path(path))


def nullable(struct):
    """A Spark schema with every field nullable: a null from a Python worker must never crash the JVM."""
    from pyspark.sql.types import StructField, StructType

    return StructType([StructField(f.name, f.dataType, True, f.metadata) for f in struct.fields])


def read_dataset(spark, path: str, schema, what: str):
    """A parquet dataset as ``schema``'s columns: missing nullable ones become null, types cast.

    Candidates/URL-list data is accepted too: a missing uid is computed later from (url, text),
    a missing text_source is "caption", a missing source_file is the file the row came from.
    """
    from pyspark.sql import functions as F

    from pipeline import inputs, storage
    from schemas import to_spark

    storage.require_exists(path, what)
    inputs.require_parquet(path, what, ("url", "text"))  # a damaged part stops here, naming the file
    try:
        df = read_parquet(spark, path)
    except Exception as e:  # Spark's AnalysisException: not Parquet, no files, unreadable footer
        raise UserError(f"{what}: cannot read {path} as Parquet: {str(e).splitlines()[0]}") from None
    have = set(df.columns)
    missing = [c for c in ("url", "text") if c not in have]
    if missing:
        raise UserError(f"{what} {path} lacks column(s) {missing} (needs at least url and text; "
                        f"columns: {', '.join(df.columns)})")
    fill = {"text_source": F.lit("caption"), "source_file": F.input_file_name()}
    cols = []
    for f in to_spark(schema).fields:
        if f.name in have:
            cols.append(F.col(f.name).cast(f.dataType).alias(f.name))
        else:
            cols.append(fill.get(f.name, F.lit(None)).cast(f.dataType).alias(f.name))
    return df.select(*cols)
