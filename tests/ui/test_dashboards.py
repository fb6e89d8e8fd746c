"""`nscnet ui` (real mlflow server + optuna-dashboard on free ports) and the comparison page
in headless Chromium, over a real study on a tiny blob dataset."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from nscnet.config import StudyConfig
from nscnet.runs import tracking as nstracking
from nscnet.studies import run_study
from nscnet.ui.dashboards import write_comparison
from tests.conftest import ROOT, require
from tests.fixtures_studies import blob_data, free_port, worker_env

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


@pytest.fixture
def small_study(tracking, tmp_path):
    """A finished 4-trial BASENet study in tmp_path/optuna.journal, runs in the test's store."""
    data = blob_data(tmp_path / "data", classes=3, per_class=10, seed=4)
    summary = run_study(StudyConfig(data=str(data), params="k", k_min=2, k_max=16, n_trials=4, refine_k=False,
                                    overrides="pca_dim=8,export=false,n_init=2", truth=True,
                                    storage=str(tmp_path / "optuna.journal"), study_name="ui-study"))
    return summary


def _get(url: str, data: dict | None = None) -> dict:
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_ui_serves_mlflow_and_optuna_dashboard_then_stops_both(small_study, tmp_path):
    mlflow_port, dashboard_port = free_port(), free_port()
    ui = subprocess.Popen([sys.executable, "-m", "nscnet", "ui", "--mlflow-port", str(mlflow_port),
                           "--dashboard-port", str(dashboard_port), "--storage", "optuna.journal"],
                          cwd=tmp_path, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, deadline = [], time.monotonic() + 150
    try:
        while time.monotonic() < deadline and not any("Press Ctrl-C" in line for line in lines):
            line = ui.stdout.readline()
            if not line and ui.poll() is not None:
                break
            lines.append(line)
        assert any(f"http://127.0.0.1:{mlflow_port}" in line for line in lines), "".join(lines)
        assert any(f"http://127.0.0.1:{dashboard_port}" in line for line in lines), "".join(lines)
        children = psutil.Process(ui.pid).children(recursive=True)
        assert len(children) >= 2
        base = f"http://127.0.0.1:{mlflow_port}/api/2.0/mlflow"
        experiment = _get(f"{base}/experiments/get-by-name?experiment_name=nscnet")["experiment"]
        runs = _get(f"{base}/runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]
        tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs]
        assert sum(t.get("optuna.study_name") == "ui-study" and t.get("nscnet.step") == "basenet" for t in tags) == 4
        parent = next(run["info"]["run_id"] for run, t in zip(runs, tags) if t.get("nscnet.step") == "study")
        summary = _get(f"http://127.0.0.1:{mlflow_port}/get-artifact?path=study_summary.json&run_uuid={parent}")
        assert summary["trials"]["complete"] == 4  # the UI reads the artifacts beside the store too
        studies = _get(f"http://127.0.0.1:{dashboard_port}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["ui-study"]
        assert any(line.startswith("Access: this machine only") for line in lines)
        foreign = urllib.request.Request(f"{base}/experiments/search", headers={"Host": "evil.example"})
        with pytest.raises(urllib.error.HTTPError, match="403"):  # DNS rebinding: MLflow's host check is on
            urllib.request.urlopen(foreign, timeout=10)
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(30)
    assert ui.returncode == 0
    time.sleep(0.5)
    alive = [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert alive == []


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_comparison_page_opens_in_headless_chromium_with_a_point_per_run(small_study, tmp_path):
    chromium = _chromium()
    require(chromium is not None, "Chromium (Debian package chromium) for the headless page test")
    runs = nstracking.search_runs("nscnet")
    parent = runs[runs["tags.nscnet.step"] == "study"]["run_id"].iloc[0]  # the study logged its page
    assert "dashboards/nscnet-comparison.html" in nstracking.list_artifacts(parent, "dashboards")
    assert not Path("dashboards").exists() and not (ROOT / "dashboards" / "nscnet-comparison.html").exists()
    page = write_comparison("nscnet", tmp_path / "comparison.html")
    profile = tmp_path / "chromium-profile"
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    dom = subprocess.run([chromium, *flags, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not [line for line in console if re.search(r"error|uncaught", line, re.I)], console
    # one trace per metric panel; each point trace holds one <path class="point"> per run with that metric
    traces = dom.stdout.split('class="trace scatter')[1:]
    assert traces, dom.stdout[:2000]
    points = [chunk.count('class="point"') for chunk in traces]
    with_silhouette = int(runs["metrics.silhouette"].notna().sum())
    assert with_silhouette == 4  # the four trials; the study's parent run has no silhouette
    assert points[0] == with_silhouette
    assert points[1] == int(runs["metrics.n_clusters"].notna().sum())
    assert "nmi_truth" in dom.stdout
    artifacts = Path(os.environ.get("NSCNET_TEST_ARTIFACTS", tmp_path / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "comparison-page.png"
    subprocess.run([chromium, *flags, "--window-size=1200,2400", "--virtual-time-budget=5000",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
    print(f"screenshot of the comparison page: {shot}")


def test_compare_script_writes_to_the_working_directory_or_out_never_the_checkout(small_study, tmp_path):
    before = sorted(p.name for p in (ROOT / "dashboards").iterdir())
    script = [sys.executable, str(ROOT / "dashboards" / "compare.py"), "--experiment", "nscnet"]
    done = subprocess.run(script, cwd=tmp_path, env=worker_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "nscnet-comparison.html").is_file()
    named = tmp_path / "pages" / "mine.html"
    done = subprocess.run([*script, "--out", str(named)], cwd=tmp_path, env=worker_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert named.is_file() and str(named) in done.stdout
    assert sorted(p.name for p in (ROOT / "dashboards").iterdir()) == before

