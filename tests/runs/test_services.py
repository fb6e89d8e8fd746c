"""Unreachable services through the real CLI (issue 12): a tracking server that is down, a
tracking database or Optuna storage that refuses the connection, an artifact location that
cannot be written. Each is one line naming the URL (password masked), exit code 1, no run
left behind. The closed ports are loopback ports nothing listens on."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest

from tests.conftest import ROOT
from tests.fixtures_cluster import make_blob_dataset
from tests.fixtures_studies import free_port

SECRET = "s3cr3t-pw"


def _nscnet(cwd, *args, env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "NSCNET_FIGURE_PNG": "false",
           "no_proxy": "127.0.0.1,localhost", **(env or {})}
    return subprocess.run([sys.executable, "-m", "nscnet", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180)  # MLflow alone would retry for minutes


def _one_line_error(done, step: str, *needles: str) -> str:
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr and SECRET not in done.stderr + done.stdout, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"nscnet {step}: error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "run_id=" not in done.stdout
    return errors[0]


@pytest.fixture
def data(tmp_path):
    return make_blob_dataset(tmp_path / "ds", classes=3, per_class=10)


def test_a_tracking_server_that_is_down(tmp_path, data):
    uri = f"http://nscnet:{SECRET}@127.0.0.1:{free_port()}"
    done = _nscnet(tmp_path, "basenet", "--data", str(data), "--k", "3", env={"MLFLOW_TRACKING_URI": uri})
    line = _one_line_error(done, "basenet", uri.replace(SECRET, "***"), "does not answer")
    assert "refused" in line.lower()
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()


def test_a_tracking_database_that_refuses_the_connection(tmp_path, data):
    uri = f"postgresql://nscnet:{SECRET}@127.0.0.1:{free_port()}/mlflow"
    done = _nscnet(tmp_path, "basenet", "--data", str(data), "--k", "3", env={"MLFLOW_TRACKING_URI": uri})
    _one_line_error(done, "basenet", uri.replace(SECRET, "***"), "refused")
    assert not (tmp_path / "mlartifacts").exists()


def test_an_optuna_storage_that_refuses_the_connection(tracking, tmp_path, data):
    storage = f"postgresql://nscnet:{SECRET}@127.0.0.1:{free_port()}/optuna"
    done = _nscnet(tmp_path, "study", "--model", "basenet", "--data", str(data), "--storage", storage,
                   "--n_trials", "2", "--params", "k", "--k_min", "2", "--k_max", "4")
    _one_line_error(done, "study", "Optuna storage", storage.replace(SECRET, "***"), "refused")
    mlflow.set_tracking_uri(tracking)
    assert mlflow.search_runs(search_all_experiments=True).empty  # no study run, no trial run


def test_an_artifact_location_that_cannot_be_written(tracking, tmp_path, data):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the artifact folder should be")
    location = (blocker / "artifacts").as_uri()
    mlflow.set_tracking_uri(tracking)
    mlflow.create_experiment("nscnet", artifact_location=location)
    done = _nscnet(tmp_path, "basenet", "--data", str(data), "--k", "3")
    _one_line_error(done, "basenet", location, "'nscnet'", "cannot be written")
    assert mlflow.search_runs(search_all_experiments=True).empty  # checked before the run opened


def test_a_sqlite_store_in_a_folder_that_cannot_be_made(tmp_path, data):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    uri = f"sqlite:///{blocker / 'sub' / 'mlflow.db'}"
    done = _nscnet(tmp_path, "basenet", "--data", str(data), "--k", "3", env={"MLFLOW_TRACKING_URI": uri})
    _one_line_error(done, "basenet", uri, "cannot be created")

