"""Helpers for the study, dashboard and server tests: tiny datasets, worker processes, a
throwaway PostgreSQL, a real `mlflow server`.

Datasets come from `fixtures_cluster.make_blob_dataset` (noisy copies of a known number of
prototypes). Workers are real `python -m nscnet study` processes; PostgreSQL is Debian's
server started as user postgres in a temporary folder and stopped at teardown, with two
databases (`studies` for Optuna, `mlflow` for an MLflow backend store: `database(url, name)`);
`mlflow_server` runs `mlflow server` on a free loopback port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import ROOT, require
from tests.fixtures_cluster import make_blob_dataset

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def blob_data(path: Path, **kwargs) -> Path:
    return make_blob_dataset(path, **kwargs)


def worker_env() -> dict[str, str]:
    """Environment of a worker process: the test's tracking store, this checkout, one thread."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1"}


def start_worker(cwd: Path, *args: str, log_name: str = "worker") -> subprocess.Popen:
    """`python -m nscnet study <args>` in `cwd`, output to cwd/<log_name>.log."""
    log = open(cwd / f"{log_name}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "nscnet", "study", *args], cwd=cwd, env=worker_env(),
                            stdout=log, stderr=subprocess.STDOUT)


def _pg_bin() -> Path | None:
    if (PG_BIN / "initdb").exists():
        return PG_BIN
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb")) if Path("/usr/lib/postgresql").is_dir() else []
    return found[-1].parent if found else None


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server; yields a URL with a password (trust auth ignores it)."""
    bin_dir = _pg_bin()
    require(bin_dir is not None and shutil.which("runuser") is not None and os.geteuid() == 0,
            "PostgreSQL server binaries (Debian postgresql) and root to run them as user postgres")
    base = Path(tempfile.mkdtemp(prefix="nscnet-pg-"))  # pytest's tmp dirs are closed to user postgres
    base.chmod(0o755)
    folder = base / "data"
    subprocess.run(["install", "-d", "-o", "postgres", "-g", "postgres", str(folder)], check=True)
    port = free_port()

    def as_postgres(*cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True)

    as_postgres(str(bin_dir / "initdb"), "-D", str(folder), "-A", "trust", "-U", "postgres")
    as_postgres(str(bin_dir / "pg_ctl"), "-D", str(folder), "-w", "-l", str(folder / "server.log"),
                "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")
    try:
        for name in ("studies", "mlflow"):
            as_postgres(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), name)
        yield f"postgresql://postgres:pw-s3cret-9731@127.0.0.1:{port}/studies"
    finally:
        as_postgres(str(bin_dir / "pg_ctl"), "-D", str(folder), "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def database(url: str, name: str) -> str:
    """The URL of another database on the same server."""
    return url.rsplit("/", 1)[0] + "/" + name


@contextlib.contextmanager
def mlflow_server(backend: str, artifacts: Path, log: Path, *, timeout_s: float = 120) -> Iterator[str]:
    """`mlflow server` (one worker, job execution off) on a free 127.0.0.1 port with this
    backend store and `--serve-artifacts` into `artifacts`; yields its URL, stops it after."""
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", backend, "--serve-artifacts", "--artifacts-destination", str(artifacts)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"mlflow server did not start: {log.read_text()[-2000:]}")
                time.sleep(1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have died on its own
            os.killpg(server.pid, 15)
        server.wait(timeout=30)


def wait_all(processes: list[subprocess.Popen], timeout_s: float = 150) -> None:
    deadline = time.monotonic() + timeout_s
    for process in processes:
        process.wait(max(1.0, deadline - time.monotonic()))
