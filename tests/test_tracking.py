"""trk.py against a local SQLite store and a real `mlflow server` on loopback."""

from __future__ import annotations

import os
import shutil
import time

import plotly.graph_objects as go
import pytest

from nscnet import tracking as trk
from nscnet.config import BasenetConfig, DataError


def _log_a_run(tmp_path):
    cfg = BasenetConfig(experiment="tracking-test", k=7, k_values=(4, 8))
    note = tmp_path / "note.txt"
    note.write_text("hello")
    with trk.start_run(cfg, "basenet", run_name="t") as run:
        trk.log_metrics({"silhouette": 0.5, "inertia": None, "bad": float("nan")}, step=0)
        trk.log_metrics({"silhouette": 0.6}, step=1)
        trk.log_artifact(note)
        trk.log_figure(go.Figure(go.Scatter(x=[1, 2], y=[3, 4])), "curve")
        with trk.artifact_dir("tracks") as folder:  # local store: the run's own folder; server: uploaded
            (folder / "a.txt").write_text("0.1\t0.2\tcluster_01\n")
    return run.info.run_id


def _check_run(run_id):
    run = trk.get_run(run_id)
    assert run.data.params["k"] == "7" and run.data.params["k_values"] == "4,8"
    assert run.data.params["whiten"] == "true"
    assert run.data.tags["nscnet.step"] == "basenet"
    assert run.info.status == "FINISHED"
    assert "inertia" not in run.data.metrics and "bad" not in run.data.metrics  # missing, not faked
    assert trk.metric_history(run_id, "silhouette") == [(0, 0.5), (1, 0.6)]
    files = set(trk.list_artifacts(run_id)) | set(trk.list_artifacts(run_id, "figures"))
    assert {"note.txt", "figures/curve.html"} <= files
    assert trk.download_artifact(run_id, "tracks/a.txt").read_text() == "0.1\t0.2\tcluster_01\n"
    if shutil.which("chromium") or os.environ.get("CI"):  # .ci/run installs chromium
        assert "figures/curve.png" in files
    assert trk.download_artifact(run_id, "note.txt").read_text() == "hello"


def test_local_sqlite_store_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert trk.tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = _log_a_run(tmp_path)
    _check_run(run_id)
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "mlartifacts").is_dir()


def test_failed_run_is_marked_failed(tracking):
    with pytest.raises(RuntimeError):
        with trk.start_run(BasenetConfig(), "basenet") as run:
            raise RuntimeError("boom")
    assert trk.get_run(run.info.run_id).info.status == "FAILED"


def test_unknown_run_id_is_a_clear_error(tracking):
    with pytest.raises(DataError, match="no MLflow run with id 'nope'"):
        trk.get_run("nope")


@pytest.mark.slow
def test_same_code_logs_through_a_real_mlflow_server(tmp_path, monkeypatch):
    from tests.fixtures_studies import mlflow_server

    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server-artifacts",
                       tmp_path / "server.log") as url:
        work = tmp_path / "client"
        work.mkdir()
        monkeypatch.chdir(work)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        run_id = _log_a_run(work)
        _check_run(run_id)
        assert not (work / "mlflow.db").exists()  # nothing went to the local default store
        assert any((tmp_path / "server-artifacts").rglob("note.txt"))  # artifacts went through the server


def test_long_steps_log_system_metrics_and_experiments_open_on_training_runs(tracking, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    cfg = BasenetConfig(experiment="system-metrics")
    with trk.start_run(cfg, "nscnet") as run:
        deadline = time.time() + 30
        while time.time() < deadline and not any(
                k.startswith("system/") for k in trk.get_run(run.info.run_id).data.metrics):
            time.sleep(0.5)
    metrics = trk.get_run(run.info.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics and "system/system_memory_usage_megabytes" in metrics
    with trk.start_run(cfg, "basenet") as short:
        pass
    assert not any(k.startswith("system/") for k in trk.get_run(short.info.run_id).data.metrics)
    import mlflow

    assert mlflow.get_experiment_by_name("system-metrics").tags[trk.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_mlflow_run_params_stay_and_values_in_effect_are_tagged(tracking, monkeypatch):
    # `mlflow run` logs every MLproject parameter before the step starts; a preset may then
    # change a value (MLflow params cannot change): the value in effect goes into a tag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking)  # this test's store, whatever an earlier test set
    experiment = client.create_experiment("project-run")
    project = client.create_run(experiment)
    client.log_param(project.info.run_id, "k", "7")
    monkeypatch.setenv("MLFLOW_RUN_ID", project.info.run_id)
    with trk.start_run(BasenetConfig(k=9, experiment="project-run"), "basenet") as run:
        assert run.info.run_id == project.info.run_id
    logged = trk.get_run(project.info.run_id).data
    assert logged.params["k"] == "7" and logged.params["pca_dim"] == str(BasenetConfig().pca_dim)
    assert logged.tags["nscnet.effective.k"] == "9"
    assert "nscnet.effective.pca_dim" not in logged.tags
