"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the compose file is valid
against the Compose Specification's JSON schema (what `docker compose config` enforces), and every
file, command, class, subcommand, config key and environment variable they name exists here."""

from __future__ import annotations

import json
import re
import shlex
import zipfile
from importlib import resources

import pytest
import yaml

from tests.cluster import REPO, SPARK_HOME

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
WIT_IMAGE = "wit-builder:latest"
APP = "/app"  # the Dockerfile's WORKDIR, where the repo's files are copied


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the x-… anchors and `<<` merges like compose


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def _ours(svc: dict) -> bool:
    return svc.get("image") == WIT_IMAGE or "build" in svc


def _argv(command) -> list[list[str]]:
    """The programs a service runs: a list command, or each `&&` step of an `sh -c` script."""
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if argv[:2] == ["sh", "-c"]:
        return [[a for a in shlex.split(step) if a != "exec"] for step in argv[2].split("&&")]
    return [argv]


def test_compose_file_is_valid_against_the_compose_spec(compose):
    jsonschema = pytest.importorskip("jsonschema")
    spec_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(spec_file.read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_services_and_their_references(compose):
    services = compose["services"]
    assert {"spark-master", "spark-worker-1", "spark-worker-2", "minio", "create-bucket", "sample-web", "submit"} <= set(services)
    assert services["spark-master"]["image"].startswith("apache/spark:4.0.")
    for name, svc in services.items():
        deps = svc.get("depends_on", [])
        assert set(deps) <= set(services), f"{name} depends on an unknown service"
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0]
            assert source in compose.get("volumes", {}) or (REPO / source).exists(), f"{name}: volume {source}"
        for cfg in svc.get("configs", []):
            assert cfg["source"] in compose.get("configs", {}), f"{name}: config {cfg['source']}"
        if "build" in svc:
            assert (REPO / svc["build"]["context"] / svc["build"].get("dockerfile", "Dockerfile")).is_file()


def test_spark_commands_name_real_scripts_classes_and_settings(compose):
    jars = list((SPARK_HOME / "jars").glob("spark-core_*.jar"))
    classes = set(zipfile.ZipFile(jars[0]).namelist())
    masters = 0
    for name, svc in compose["services"].items():
        for argv in _argv(svc.get("command", [])):
            prog = argv[0].rsplit("/", 1)[-1] if argv else ""
            if prog not in ("spark-class", "spark-submit"):
                continue
            assert argv[0].startswith(("/opt/spark/bin/", "spark-")), f"{name}: {argv[0]} (not on the image's PATH)"
            assert (SPARK_HOME / "bin" / prog).is_file(), f"{name}: no {prog} in the Spark distribution"
            if prog == "spark-class":
                assert f"{argv[1].replace('.', '/')}.class" in classes, f"{name}: no class {argv[1]}"
                masters += argv[1].endswith(".Master")
                if argv[1].endswith(".Worker"):
                    assert argv[-1] == "spark://spark-master:7077"
            else:
                _check_submit(name, argv)
    assert masters == 1


def _check_submit(name: str, argv: list[str]) -> None:
    from pipeline.cli import build_parser

    job_at = next(i for i, a in enumerate(argv) if a.endswith(".py"))
    opts, job, job_args = argv[1:job_at], argv[job_at], argv[job_at + 1:]
    assert opts[opts.index("--master") + 1] == "spark://spark-master:7077"
    for i, opt in enumerate(opts):
        if opt == "--conf":
            key, _, value = opts[i + 1].partition("=")
            assert key.startswith("spark.") and value, f"{name}: bad --conf {opts[i + 1]}"
    assert job.startswith(f"{APP}/"), f"{name}: {job} is not under the image's {APP}"
    rel = job[len(APP) + 1:]
    assert (REPO / rel).is_file(), f"{name}: {rel} does not exist"
    command = re.search(r'job_main\("([\w ]+)"', (REPO / rel).read_text()).group(1)
    build_parser().parse_args([*command.split(), *job_args])  # exits (fails the test) on an unknown option


def test_wit_commands_parse_with_the_real_cli(compose):
    from pipeline.cli import build_parser

    parser = build_parser()
    ran = set()
    for name, svc in compose["services"].items():
        for argv in _argv(svc.get("command", [])):
            if argv and argv[0] == "wit":
                try:
                    args = parser.parse_args(argv[1:])
                except SystemExit:
                    pytest.fail(f"{name}: `{shlex.join(argv)}` is not a valid wit command")
                assert getattr(args, "func", None), f"{name}: {argv[1]} runs nothing"
                ran.add(argv[1])
    assert {"sample", "serve"} <= ran


def test_run_config_and_the_sample_web_agree(compose, tmp_path):
    """The inline run config is valid, and its paths and hosts are the ones the services provide."""
    from pipeline.config import load_config

    path = tmp_path / "run.yaml"
    path.write_text(compose["configs"]["run-config"]["content"])
    cfg = load_config(path)
    services = compose["services"]
    script = services["sample-web"]["command"][2]
    sample_dir = re.search(r"wit sample (\S+)", script).group(1)
    base_url = re.search(r"--base-url (\S+)", script).group(1)
    serve_port = re.search(r"--port (\d+)", script).group(1)
    host = base_url.split("://", 1)[1]
    assert host == f"sample-web:{serve_port}"  # the service name resolves on the compose network
    assert host in cfg.download.allow_hosts  # its private address is allowed for this host only
    assert f"{serve_port}:{serve_port}" in services["sample-web"]["ports"]
    assert cfg.extract.inputs == [f"{sample_dir}/crawl.warc.gz"]
    assert "crawl.warc.gz" in (REPO / "pipeline" / "sample_web" / "generate.py").read_text()
    for svc in ("submit", "spark-worker-1", "spark-worker-2"):  # executors read the sample too
        assert f"sample:{sample_dir}:ro" in services[svc]["volumes"]
    assert cfg.output_dir.startswith("s3://wit/")
    assert "mc mb --ignore-existing local/wit" in services["create-bucket"]["command"][0]
    assert cfg.storage.endpoint_url == services["submit"]["environment"]["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert services["submit"]["configs"][0]["target"] in services["submit"]["command"]


def test_environment_variables_are_ones_something_reads(compose):
    from pipeline import storage

    aws = {n for names in storage._ENV.values() for n in names}
    # Spark reads its variables in its scripts, its launcher and its core (the class files' constants).
    spark_text = "".join(p.read_text(errors="ignore") for d in ("bin", "sbin") for p in (SPARK_HOME / d).iterdir()
                         if p.is_file() and not p.name.endswith(".cmd"))
    for jar in [*(SPARK_HOME / "jars").glob("spark-launcher_*.jar"), *(SPARK_HOME / "jars").glob("spark-core_*.jar")]:
        with zipfile.ZipFile(jar) as z:
            spark_text += "".join(z.read(n).decode("latin-1") for n in z.namelist()
                                  if n.endswith(".class") and ("launcher" in n or "/util/Utils" in n or "/deploy/" in n))
    users, passwords = set(), set()
    for name, svc in compose["services"].items():
        for key, value in svc.get("environment", {}).items():
            if key.startswith("AWS_"):
                assert key in aws, f"{name}: {key} is read by nothing in pipeline/storage.py"
            elif key.startswith("SPARK_"):
                assert key in spark_text, f"{name}: {key} is not a Spark setting"
            elif key == "MINIO_ROOT_USER":
                users.add(value)
            elif key == "MINIO_ROOT_PASSWORD":
                passwords.add(value)
            else:
                pytest.fail(f"{name}: unchecked environment variable {key}")
    keys = {(s["environment"]["AWS_ACCESS_KEY_ID"], s["environment"]["AWS_SECRET_ACCESS_KEY"])
            for s in compose["services"].values() if "AWS_ACCESS_KEY_ID" in s.get("environment", {})}
    assert keys == {(next(iter(users)), next(iter(passwords)))}  # the clients use MinIO's account


def test_dockerfile_copies_existing_files_and_matches_compose(dockerfile, compose):
    copied = [a.split() for ins, a in dockerfile if ins == "COPY" and "--from" not in a]
    assert copied
    ignored = {ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    for *sources, _dest in copied:
        for src in sources:
            assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
            assert src not in ignored, f".dockerignore hides {src}"
    # Every package the wheel needs is copied in (setup.cfg's packages.find include list).
    setup = (REPO / "setup.cfg").read_text()
    for pkg in re.findall(r"^\s+(\w+)$", setup.split("[options.packages.find]")[1].split("[")[0], re.M):
        assert any(pkg in s for *s, _ in copied), f"Dockerfile does not copy package {pkg}"
    assert "wit = pipeline.cli:main" in setup  # the image's `wit` command
    args = dict(re.match(r"(\w+)=(\S+)", a).groups() for ins, a in dockerfile if ins == "ARG" and "=" in a)
    image = compose["x-wit-image"]
    assert image["build"]["args"]["SPARK_VERSION"] == args["SPARK_VERSION"]
    assert compose["services"]["spark-master"]["image"].startswith(f"apache/spark:{args['SPARK_VERSION']}-")
    assert any(ins == "FROM" and a.startswith("apache/spark:${SPARK_VERSION}-scala2.13-java17") for ins, a in dockerfile)
    # hadoop-aws must match the Hadoop that this Spark line ships (same minor as the venv's pyspark).
    import pyspark

    if pyspark.__version__.rsplit(".", 1)[0] == args["SPARK_VERSION"].rsplit(".", 1)[0]:
        hadoop = next((SPARK_HOME / "jars").glob("hadoop-client-api-*.jar")).name.removeprefix("hadoop-client-api-").removesuffix(".jar")
        assert args["HADOOP_AWS_VERSION"] == hadoop
    adds = [a for ins, a in dockerfile if ins == "ADD"]
    assert any("hadoop-aws-${HADOOP_AWS_VERSION}.jar" in a for a in adds)
    assert any("bundle-${AWS_SDK_VERSION}.jar" in a for a in adds)
    cmd = json.loads(next(a for ins, a in dockerfile if ins == "CMD"))
    assert cmd[0] == "wit"


def test_job_scripts_do_not_shadow_the_standard_library():
    """spark-submit runs jobs/X.py with jobs/ first on sys.path, where jobs/select.py would replace the stdlib
    `select` module (socket imports it) for every job that left the folder there."""
    import subprocess
    import sys

    for job in sorted((REPO / "jobs").glob("*.py")):
        probe = (f"import runpy, sys; sys.argv = [{str(job)!r}, '--help']\n"
                 "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit:\n    pass\n"
                 "import select; print(select.__file__)")
        r = subprocess.run([sys.executable, "-c", probe], cwd=job.parent, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{job.name}: {r.stderr[-2000:]}"
        assert str(REPO / "jobs") not in r.stdout.strip().splitlines()[-1], f"{job.name} lets jobs/select.py shadow select"
