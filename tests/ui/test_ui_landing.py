"""The MLflow UI lands on the training runs (headless Chromium against a real `mlflow server`).

MLflow 3.17 decides what an experiment opens on from a browser-wide workflow type
(localStorage `mlflow.workflowType`, "genai" in a fresh browser), not from the experiment's
`mlflow.experimentKind` tag; `nscnet.runs.tracking.ui_landing` adds `workflowType=machine_learning`
and the charts view to the address `nscnet ui` prints.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import require
from tests.fixtures_studies import blob_data, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _dom(url: str, budget_ms: int = 25000) -> str:
    """The page's DOM after its scripts ran, from a fresh headless Chromium profile."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                               "--window-size=1400,900", "--dump-dom", url],
                              capture_output=True, text=True, timeout=120)
    return done.stdout


@pytest.fixture
def mlflow_server(tracking, tmp_path):
    port = free_port()
    log = open(tmp_path / "mlflow.log", "wb")
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", tracking,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/health", timeout=2)
            break
        except Exception:
            assert server.poll() is None, (tmp_path / "mlflow.log").read_text()[-2000:]
            time.sleep(0.5)
    else:
        pytest.fail("mlflow server did not answer within 120 s")
    yield base
    os.killpg(server.pid, 15)
    server.wait(20)


def test_nscnet_ui_address_opens_the_training_runs_charts(tracking, tmp_path, mlflow_server):
    require(CHROMIUM is not None, "chromium is not installed (apt-get install chromium)")
    from nscnet.runs import tracking as T
    from nscnet.models.basenet import run_basenet

    data = blob_data(tmp_path / "data", classes=3, per_class=10)
    from nscnet.config import BasenetConfig

    metrics = run_basenet(BasenetConfig(data=str(data), truth=True, pca_dim=8, whiten=False, figures=False,
                                        export=False))
    experiment_id = T.get_run(metrics["run_id"]).info.experiment_id
    landing = T.ui_landing("nscnet", mlflow_server)
    assert landing == f"{mlflow_server}/#/experiments/{experiment_id}/runs?workflowType=machine_learning" \
                      "&compareRunsMode=CHART"
    page = _dom(landing)
    # the training runs, by their names, and the metric charts (rendered as they scroll into view)
    assert "basenet pca8 kmeans k=4" in page and "Search metric charts" in page, page[-2000:]
    assert "Model metrics" in page and "Detect Issues" not in page
    # the bare experiment address in a fresh browser opens the GenAI overview: what the parameter fixes
    bare = _dom(f"{mlflow_server}/#/experiments/{experiment_id}")
    assert "Detect Issues" in bare and "basenet pca8 kmeans k=4" not in bare
    tags = T.get_run(metrics["run_id"])  # the experiment carries the kind tag and the how-to note
    import mlflow

    experiment = mlflow.get_experiment(tags.info.experiment_id)
    assert experiment.tags[T.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert "nmi_truth" in experiment.tags["mlflow.note.content"]
