"""trk.py against a local SQLite store and a real `mlflow server` on loopback."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import plotly.graph_objects as go
import pytest

from nscnet.config import BasenetConfig, ConfigError, DataError
from nscnet.runs import tracking as trk
from tests.conftest import png_expected, require


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
    assert trk.wait_for_pngs()  # PNG copies are rendered after the run, by a process of their own
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
    if png_expected():
        assert "figures/curve.png" in files
    assert trk.download_artifact(run_id, "note.txt").read_text() == "hello"


def test_local_sqlite_store_by_default(tmp_path, monkeypatch, png_on):
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
def test_same_code_logs_through_a_real_mlflow_server(tmp_path, monkeypatch, png_on):
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


def test_mlflow_run_params_stay_and_the_step_logs_in_its_run_and_experiment(tracking, monkeypatch):
    # `mlflow run` creates the run (in the experiment of its --experiment-name) and logs the
    # MLproject parameters before the step starts; the step continues that run and adds the rest
    from mlflow.tracking import MlflowClient

    from nscnet.cli import config_from_args

    client = MlflowClient(tracking_uri=tracking)  # this test's store, whatever an earlier test set
    experiment = client.create_experiment("project-run")
    project = client.create_run(experiment)
    client.log_param(project.info.run_id, "k", "9")
    monkeypatch.setenv("MLFLOW_RUN_ID", project.info.run_id)
    assert trk.project_experiment() == "project-run"
    cfg = config_from_args("basenet", ["--k", "9"])
    assert cfg.experiment == "project-run"  # the experiment the run is in, logged as such
    with pytest.raises(ConfigError, match="--experiment-name other"):  # -P experiment=other cannot move the run
        config_from_args("basenet", ["--experiment", "other"])
    with trk.start_run(cfg, "basenet") as run:
        assert run.info.run_id == project.info.run_id
    logged = trk.get_run(project.info.run_id)
    assert logged.data.params["k"] == "9" and logged.data.params["pca_dim"] == str(BasenetConfig().pca_dim)
    assert logged.data.params["experiment"] == "project-run" and logged.info.experiment_id == experiment
    assert not any(tag.startswith("nscnet.effective") for tag in logged.data.tags)


def _dom_offline(chromium: str, page, profile) -> str:
    """The DOM of a page after 5 s of virtual time in headless Chromium with no network: its
    own empty network namespace where possible (root), and no proxy or name resolution anyway."""
    offline = ["unshare", "-n"] if os.geteuid() == 0 and shutil.which("unshare") else []
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             f"--user-data-dir={profile}", "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
             "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    done = subprocess.run([*offline, chromium, *flags], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_logged_figures_are_drawn_by_a_browser_with_the_network_off(tracking, tmp_path):
    chromium = shutil.which("chromium") or trk.find_browser()
    require(chromium is not None, "Chromium (Debian package chromium) to open the figure")
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2], mode="markers"))
    with trk.start_run(BasenetConfig(), "basenet") as run:
        trk.log_figure(fig, "points", png=False)
    page = trk.download_artifact(run.info.run_id, "figures/points.html", tmp_path / "dl")
    assert not re.search(r"<script[^>]*\ssrc=", page.read_text())  # nothing loaded from elsewhere
    dom = _dom_offline(chromium, page, tmp_path / "profile")
    assert 'class="main-svg"' in dom and dom.count('class="point"') == 3, dom[:2000]
    # the control: the same figure loading plotly.js from the CDN stays an empty page here
    cdn = tmp_path / "cdn.html"
    fig.write_html(cdn, include_plotlyjs="cdn")
    assert 'class="main-svg"' not in _dom_offline(chromium, cdn, tmp_path / "profile")
    print(f"one self-contained figure: {page.stat().st_size / 1e6:.2f} MB")


def test_one_serving_png_worker_draws_the_figures_of_several_runs(tracking, tmp_path, monkeypatch, png_on):
    """The demo's PNG path: runs only mark their spools ready; one `pngjob --serve` draws them all."""
    import sys

    from nscnet.runs import pngjob

    require(png_expected(), "no Chrome/Chromium for kaleido")
    root = tmp_path / "spool"
    root.mkdir()
    monkeypatch.setenv(pngjob.SPOOL_ENV, str(root))
    monkeypatch.setenv(pngjob.SERVE_ENV, "1")
    run_ids = []
    for k in (3, 4):
        with trk.start_run(BasenetConfig(experiment="png-serve", k=k), "basenet") as run:
            trk.log_figure(go.Figure(go.Scatter(x=[1, 2], y=[3, k])), "curve")
        run_ids.append(run.info.run_id)
    assert not trk._png_workers  # no per-run worker was started
    assert len([s for s in root.iterdir() if (s / pngjob.READY).is_file()]) == 2
    (root / pngjob.STOP).touch()  # drain what is ready, then end
    subprocess.run([sys.executable, "-m", "nscnet.runs.pngjob", "--serve", str(root)], check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(trk.Path(trk.__file__).resolve().parents[2])})
    for run_id in run_ids:
        assert "figures/curve.png" in trk.list_artifacts(run_id, "figures")
        assert trk.get_run(run_id).data.tags[pngjob.TAG] == "done: 1"
    assert not [s for s in root.iterdir() if s.is_dir()]  # every spool drawn and removed
