"""A real Spark standalone cluster on 127.0.0.1 for tests: one master, N workers, spark-submit.

Started with pyspark's own ``bin/spark-class`` (the same Master/Worker classes the compose file
and a real cluster run), each daemon in its own process group so that stopping it also ends the
executors and Python workers it forked, even when a test fails half-way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyspark

from tests.conftest import free_port

SPARK_HOME = Path(pyspark.__file__).resolve().parent
REPO = Path(__file__).resolve().parent.parent


def spark_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Spark daemons and spark-submit: pyspark's install, our venv's Python, loopback only."""
    env = dict(os.environ)
    env.update(
        SPARK_HOME=str(SPARK_HOME),
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_LOCAL_HOSTNAME="127.0.0.1",
        SPARK_MASTER_HOST="127.0.0.1",
        SPARK_DAEMON_MEMORY="256m",
        PYTHONPATH=os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p),
        NO_ALBUMENTATIONS_UPDATE="1",
        WANDB_MODE="disabled",
    )
    env.update(extra or {})
    return env


class SparkCluster:
    """Master + ``n_workers`` workers (1 core, 1 GiB each) under ``root``; use as a context manager."""

    def __init__(self, root: str | os.PathLike, n_workers: int = 2, cores: int = 1, memory: str = "1g",
                 env: dict[str, str] | None = None):
        self.root = Path(root)
        self.n_workers, self.cores, self.memory = n_workers, cores, memory
        self.port, self.webui_port = free_port(), free_port()
        self.env = spark_env({"SPARK_LOG_DIR": str(self.root / "logs"), **(env or {})})
        self.master_proc: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.worker_webui_ports: list[int] = []

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    @property
    def webui_url(self) -> str:
        return f"http://127.0.0.1:{self.webui_port}"

    # -- processes --------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log_dir = self.root / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [str(SPARK_HOME / "bin" / "spark-class"), *args],
            env=self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,  # own process group: killpg ends its children
        )
        proc.log = log  # type: ignore[attr-defined]
        return proc

    def start(self, timeout: float = 120.0) -> SparkCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.master_proc = self._spawn("master", [
                "org.apache.spark.deploy.master.Master",
                "--host", "127.0.0.1", "--port", str(self.port), "--webui-port", str(self.webui_port),
            ])
            for i in range(self.n_workers):
                self.start_worker(i)
            self.wait_for_workers(self.n_workers, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start_worker(self, i: int) -> None:
        work_dir = self.root / f"worker{i}"
        work_dir.mkdir(parents=True, exist_ok=True)
        ui = free_port()
        proc = self._spawn(f"worker{i}", [
            "org.apache.spark.deploy.worker.Worker",
            "--host", "127.0.0.1", "--cores", str(self.cores), "--memory", self.memory,
            "--work-dir", str(work_dir), "--webui-port", str(ui), self.master_url,
        ])
        if i < len(self.workers):  # a restart of a killed worker
            self.workers[i].log.close()  # type: ignore[attr-defined]
            self.workers[i], self.worker_webui_ports[i] = proc, ui
        else:
            self.workers.append(proc)
            self.worker_webui_ports.append(ui)

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker ``i`` and everything it forked (its executors): a lost machine."""
        _killpg(self.workers[i], signal.SIGKILL)
        self.workers[i].wait()

    def stop(self) -> None:
        """End every process this cluster started (workers first), politely then by force."""
        procs = [p for p in [*self.workers, self.master_proc] if p is not None]
        for p in procs:
            _killpg(p, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _killpg(p, signal.SIGKILL)  # also children that outlived their parent
            p.wait()
            p.log.close()  # type: ignore[attr-defined]

    def __enter__(self) -> SparkCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- state ------------------------------------------------------------------------------
    def master_state(self) -> dict:
        """The master's JSON status page (workers, apps)."""
        with urllib.request.urlopen(f"{self.webui_url}/json", timeout=5) as r:
            return json.load(r)

    def alive_workers(self) -> int:
        try:
            return sum(w.get("state") == "ALIVE" for w in self.master_state().get("workers", []))
        except OSError:
            return 0

    def wait_for_workers(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.alive_workers() < n:
            for name, p in [("master", self.master_proc), *((f"worker{i}", w) for i, w in enumerate(self.workers))]:
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"spark {name} exited with {p.returncode}:\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.alive_workers()}/{n} workers registered after {timeout:.0f}s:\n"
                                   f"{self.log_tail('master')}")
            time.sleep(0.5)

    def worker_executors(self, i: int) -> list[dict]:
        """Executors running on worker ``i`` now (its own JSON page); [] when it is unreachable."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.worker_webui_ports[i]}/json", timeout=5) as r:
                return json.load(r).get("executors", [])
        except OSError:
            return []

    def log_tail(self, name: str, n: int = 40) -> str:
        path = self.root / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    def worker_python_started(self, i: int) -> bool:
        """True once worker ``i``'s executor runs Python tasks (it forked pyspark's daemon/worker)."""
        return any(m in cmd for cmd in _group_cmdlines(self.workers[i].pid) for m in ("pyspark.daemon", "pyspark.worker"))

    # -- jobs -------------------------------------------------------------------------------
    def _conf(self, conf: dict[str, str] | None) -> dict[str, str]:
        # Start only when every worker has its executor, so that the tasks spread over all of them.
        return {"spark.scheduler.minRegisteredResourcesRatio": "1.0",
                "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s", **(conf or {})}

    def submit(self, job: str | os.PathLike, args: list[str] = (), conf: dict[str, str] | None = None,
               timeout: float = 600.0) -> subprocess.CompletedProcess:
        return spark_submit(job, args, self.master_url, self._conf(conf), timeout=timeout)

    def submit_async(self, job: str | os.PathLike, args: list[str] = (), conf: dict[str, str] | None = None
                     ) -> subprocess.Popen:
        """Start a job and return at once (to kill a worker while it runs); its output goes to the
        log ``submit`` (``log_tail("submit")``). End it with ``kill_group(proc)`` unless waited for."""
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        with open(self.root / "logs" / "submit.log", "wb") as log:  # the child keeps its own descriptor
            return subprocess.Popen(submit_cmd(job, args, self.master_url, self._conf(conf)), env=self.env, cwd=REPO,
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def submit_cmd(job: str | os.PathLike, args: list[str] = (), master: str = "local[2]",
               conf: dict[str, str] | None = None) -> list[str]:
    """pyspark's own spark-submit for a job (client mode, small driver and executors)."""
    settings = {
        "spark.driver.memory": "512m",
        "spark.executor.memory": "512m",
        "spark.executor.cores": "1",
        "spark.ui.enabled": "false",
        **(conf or {}),
    }
    cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", master]
    for k, v in settings.items():
        cmd += ["--conf", f"{k}={v}"]
    return [*cmd, str(job), *map(str, args)]


def spark_submit(job: str | os.PathLike, args: list[str] = (), master: str = "local[2]",
                 conf: dict[str, str] | None = None, timeout: float = 600.0) -> subprocess.CompletedProcess:
    """Run a job to its end with spark-submit; raise with its output when it fails."""
    try:
        out = subprocess.run(submit_cmd(job, args, master, conf), env=spark_env(), cwd=REPO, capture_output=True,
                             text=True, timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"spark-submit {job} on {master} ran over {timeout:.0f}s:\n{_tail(e.stderr)}") from None
    if out.returncode != 0:
        raise RuntimeError(f"spark-submit {job} on {master} failed ({out.returncode}):\n{_tail(out.stdout)}\n{_tail(out.stderr)}")
    return out


def _tail(text: str | bytes | None, n: int = 6000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-n:]


def _group_cmdlines(pgid: int) -> list[str]:
    """Command lines of the live processes in a process group (Linux /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if os.getpgid(int(d.name)) == pgid:
                out.append((d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ProcessLookupError):
            continue
    return out


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a process started with start_new_session=True and everything it started; reap it."""
    _killpg(proc, signal.SIGKILL)
    proc.wait()


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session=True: the group id is the process id
    except (ProcessLookupError, PermissionError):
        pass
