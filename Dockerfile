# The wit-builder image: Python 3.11 and this package on the official Apache Spark distribution
# (the same Spark build and Java 17 as the apache/spark master in docker-compose.yml), plus the
# hadoop-aws jars Spark needs to read and write s3a:// (MinIO, S3).
#
#   docker build -t wit-builder .
#   docker run --rm wit-builder wit --help
ARG SPARK_VERSION=4.0.1
FROM apache/spark:${SPARK_VERSION}-scala2.13-java17-ubuntu AS spark

FROM python:3.11-slim-bookworm
ARG SPARK_VERSION=4.0.1
# hadoop-aws must be the exact Hadoop version Spark was built with (Spark 4.0.x: Hadoop 3.4.1,
# see $SPARK_HOME/jars/hadoop-client-api-*.jar), with the AWS SDK v2 bundle it was built against.
ARG HADOOP_AWS_VERSION=3.4.1
ARG AWS_SDK_VERSION=2.24.6

RUN apt-get update \
 && apt-get install -y --no-install-recommends procps tini wordnet-base \
 && rm -rf /var/lib/apt/lists/*

COPY --from=spark /opt/java/openjdk /opt/java/openjdk
COPY --from=spark /opt/spark /opt/spark
ADD https://repo1.maven.org/maven2/org/apache/hadoop/hadoop-aws/${HADOOP_AWS_VERSION}/hadoop-aws-${HADOOP_AWS_VERSION}.jar /opt/spark/jars/
ADD https://repo1.maven.org/maven2/software/amazon/awssdk/bundle/${AWS_SDK_VERSION}/bundle-${AWS_SDK_VERSION}.jar /opt/spark/jars/
RUN chmod a+r /opt/spark/jars/*.jar

ENV JAVA_HOME=/opt/java/openjdk \
    SPARK_HOME=/opt/spark \
    PATH=/opt/java/openjdk/bin:/opt/spark/bin:$PATH \
    PYSPARK_PYTHON=python3.11 \
    PYSPARK_DRIVER_PYTHON=python3.11 \
    PYTHONHASHSEED=0 \
    PYTHONUNBUFFERED=1 \
    NO_ALBUMENTATIONS_UPDATE=1 \
    WANDB_MODE=disabled

WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY pipeline pipeline
COPY filters filters
COPY schemas schemas
COPY jobs jobs
# CPU torch (no CUDA download); pyspark pinned to the Spark in /opt/spark that runs it.
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu \
        "pyspark==${SPARK_VERSION}" torch torchvision . \
 && wit --help > /dev/null

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["wit", "--help"]
