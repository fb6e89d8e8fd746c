"""Every field of every step's config is read by that step's code: no option is accepted and ignored.

Each step runs for real on tiny data with a config whose class records every field read made
outside the config module itself (validation, `to_params`, `replace`, `asdict` do not count: they
touch every field). Fields read only on some paths (UMAP, OPTICS, a sweep, resume) are covered
by running the step more than once with the settings that take those paths; the union of the
reads must be every field.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from nscnet import config as C
from nscnet.steps import STEPS
from tests.fixtures_deep import make_dataset, one_torch_thread  # noqa: F401 (fixture)

CONFIG_FILE = str(Path(C.__file__).resolve())
# code that touches every field without using it: dataclass machinery and copies
BOOKKEEPING = {str(Path(dataclasses.__file__).resolve()), "<string>"}


def recording(cls: type, reads: set[str]) -> type:
    """A subclass of the config class `cls` whose instances add every field read to `reads`.

    Reads from nscnet/config.py (validation, to_params, replace) and from the dataclass machinery
    do not count; `Group.group` does (it hands a group's fields on to the step's code)."""
    names = {f.name for f in dataclasses.fields(cls)}

    def __getattribute__(self, name):
        if name in names:
            frame = sys._getframe(1)
            where = frame.f_code.co_filename
            if where not in BOOKKEEPING and (where != CONFIG_FILE or frame.f_code.co_name == "group"):
                reads.add(name)
        return object.__getattribute__(self, name)

    return type(cls.__name__, (cls,), {"__getattribute__": __getattribute__})


def run_step(step: str, reads: set[str], **values: Any) -> Any:
    cls = recording(STEPS[step].config, reads)
    return STEPS[step].load()(cls(**values))


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """One MLflow store, a tiny image dataset and synthetic recordings for the module."""
    root = tmp_path_factory.mktemp("fields")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("NSCNET_FIGURE_PNG", "false")
        mp.setenv("NSCNET_PROGRESS", "0")
        mp.setenv("NSCNET_RUNS_DIR", str(root / "checkpoints"))
        yield {"root": root, "data": str(make_dataset(root / "ds", classes=4, per_class=12, height=16, width=32))}


def assert_all_read(step: str, reads: set[str]) -> None:
    unread = sorted({f.name for f in dataclasses.fields(STEPS[step].config)} - reads)
    assert not unread, f"{step}: fields accepted but never read: {', '.join(unread)}"


TORCH = dict(num_workers=0, device="cpu", threads=1, seed=0, batch_size=16, epochs=1)
CLUSTER = dict(k=4, pca_dim=8, stability_runs=1, truth=True)


def test_every_step_is_covered():
    assert set(STEPS) == set(RUNS) | {"ui"}  # ui: test_ui_reads_every_field


def synth_runs(place, reads):
    run_step("synth", reads, out=str(place["root"] / "audio"), types=2, songs=6, recordings=1)


def preprocess_runs(place, reads):
    run_step("preprocess", reads, audio=str(place["root"] / "audio"), out=str(place["root"] / "images"),
             duration_s=1.0, n_mels=16, frames=16, n_fft=512)


def entropy_runs(place, reads):
    run_step("entropy", reads, audio=str(place["root"] / "audio"))


def basenet_runs(place, reads):
    data = place["data"]
    place["basenet"] = run_step("basenet", reads, data=data, **CLUSTER)["run_id"]
    run_step("basenet", reads, data=data, reducer="umap", umap_dim=2, algorithm="hdbscan", min_cluster_size=3,
             min_samples_values=(3, 4), export=False, figures=False, stability_runs=0)
    run_step("basenet", reads, data=data, algorithm="optics", min_samples=3, k_values=(2, 4), export=False,
             figures=False, stability_runs=0)


def auto_runs(place, reads):
    run_step("auto", reads, data=place["data"], candidates="pca-kmeans,umap-hdbscan", criterion="silhouette", k=4,
             seed=0, truth=True)


def predict_runs(place, reads):
    for model in ("basenet", "vaenet"):  # a BASENet run needs no network (no device)
        run_step("predict", reads, run_id=place[model], data=place["data"], out=str(place["root"] / f"pred-{model}"))


def zipf_runs(place, reads):
    from nscnet.runs import tracking

    run_step("zipf", reads, run_id=place["basenet"], bootstrap=5, orders=3)
    assignments = tracking.download_artifact(place["basenet"], "assignments.csv", place["root"] / "zipf-in")
    run_step("zipf", reads, assignments=str(assignments), bootstrap=5, orders=3)


def vaenet_runs(place, reads):
    vae = dict(data=place["data"], latent_dim=4, dense_units=16, filters=(4, 4, 4, 4, 4), **CLUSTER, **TORCH)
    place["vaenet"] = run_step("vaenet", reads, **vae)["run_id"]
    run_step("vaenet", reads, **{**vae, "stability_runs": 0}, algorithm="optics", min_samples=3, export=False,
             figures=False)


def nscnet_runs(place, reads):
    net = dict(backbone="small_cnn", embedding_dim=16, freq_mask=2, **CLUSTER, **TORCH)
    place["nscnet"] = run_step("nscnet", reads, data=place["data"], **{**net, "epochs": 2}, arcface=True, k_train=8,
                               keep_head=True, kmeans_warm_start=True, reseed_empty=True, export=False, figures=False)
    run_step("nscnet", reads, data=place["data"], **{**net, "epochs": 0}, pretrain_epochs=1, pretrain_epoch_size=16,
             final_reducer="umap", umap_dim=2, final_algorithm="optics", min_samples=3)


def pretrain_runs(place, reads):
    common = dict(data=place["data"], embedding_dim=16, projection_dim=8, **CLUSTER, **TORCH)
    first = run_step("pretrain", reads, **common, epoch_size=16, export=False, k_values=(2, 4))
    run_step("pretrain", reads, resume=first["run_id"])  # its own config, one more pass over the evaluation
    run_step("pretrain", reads, **{**common, "stability_runs": 0}, reducer="umap", umap_dim=2, algorithm="optics",
             min_cluster_size=3, min_samples_values=(3, 4), figures=False)


def study_runs(place, reads):
    run_step("study", reads, model="basenet", data=place["data"], n_trials=2, k_min=2, k_max=4, params="k",
             overrides="pca_dim=8,stability_runs=0,export=false", storage=str(place["root"] / "optuna.journal"),
             timeout=120.0, threads=1, compare=False)


def report_runs(place, reads):
    root = place["root"]  # a clustering of the preprocessed synthetic songs: the report plays their audio
    place["songs"] = run_step("basenet", set(), data=str(root / "images"), k=2, pca_dim=2, stability_runs=0,
                              figures=False)["run_id"]
    run_step("report", reads, run_id=place["songs"], out=str(root / "report"), exemplars=2, atypical=1,
             audio_format="wav", units=True)
    run_step("report", reads, run_id=place["songs"], out=str(root / "report2"), exemplars=1, atypical=0,
             data=str(root / "images"), audio=str(root / "audio"), context_s=0.1, audio_rate=0, map_audio_minutes=0,
             seed=1)


def curate_runs(place, reads):
    from nscnet.runs import tracking

    root = place["root"]
    run_step("curate", reads, run_id=place["songs"], merge="0,1", rename="0=a", out=str(root / "cur1"),
             bootstrap=5, units=True, data=str(root / "images"), audio=str(root / "audio"))
    run_step("curate", reads, run_id=place["songs"], drop="1", out=str(root / "cur0"), zipf=False)
    (root / "names.csv").write_text("cluster,name\n0,a\n1,b\n")
    run_step("curate", reads, run_id=place["songs"], names=str(root / "names.csv"), out=str(root / "cur2"), zipf=False)
    # the Zipf re-run needs 3 curated types at least: the 4-cluster BASENet run of the image set
    run_step("curate", reads, run_id=place["basenet"], rename="0=a", out=str(root / "cur4"), bootstrap=5)
    tracks = tracking.download_artifact(place["songs"], "audacity", root / "tracks")
    run_step("curate", reads, run_id=place["songs"], audacity=str(tracks), out=str(root / "cur3"), zipf=False)


# in order: later steps use what earlier ones made
RUNS = {"synth": synth_runs, "preprocess": preprocess_runs, "entropy": entropy_runs, "basenet": basenet_runs,
        "auto": auto_runs, "vaenet": vaenet_runs, "predict": predict_runs, "zipf": zipf_runs, "nscnet": nscnet_runs,
        "pretrain": pretrain_runs, "study": study_runs, "report": report_runs, "curate": curate_runs}


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_every_field_of_every_step_is_read_by_its_run(place):
    unread = {}
    for step, runs in RUNS.items():
        reads: set[str] = set()
        runs(place, reads)
        missing = sorted({f.name for f in dataclasses.fields(STEPS[step].config)} - reads)
        if missing:
            unread[step] = missing
    assert not unread, f"fields accepted but never read: {unread}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except Exception:
        return False


@pytest.mark.slow
def test_ui_reads_every_field(place):
    import socket

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    reads: set[str] = set()
    ports = free_port(), free_port()
    cfg = recording(STEPS["ui"].config, reads)(storage=str(place["root"] / "ui.journal"), mlflow_port=ports[0],
                                               dashboard_port=ports[1])

    def stop_when_up() -> None:  # run_ui blocks until SIGTERM: send it once both servers answer
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not all(_answers(f"http://127.0.0.1:{p}") for p in ports):
            time.sleep(0.5)
        time.sleep(5)  # and it has printed where the MLflow UI lands (the experiment's runs)
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=stop_when_up, daemon=True)
    watcher.start()
    urls = STEPS["ui"].load()(cfg)
    watcher.join()
    assert str(ports[1]) in urls["optuna-dashboard"]
    # the other access modes, through the functions run_ui calls before it starts the servers
    from nscnet.ui import access
    from nscnet.runs import tracking

    config = recording(STEPS["ui"].config, reads)
    assert "NO LOGIN" in access.reach_line(config(host="0.0.0.0", expose=True), None)
    logins = access.prepare_logins(config(auth=True, auth_dir=str(place["root"] / "ui-auth")), tracking.tracking_uri())
    assert "viewer" in access.reach_line(config(auth=True), logins)
    assert_all_read("ui", reads)
