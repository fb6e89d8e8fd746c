"""Run names, run descriptions, the Optuna side of studies, and console output that stays readable."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import optuna

from nscnet.config import BasenetConfig, NscnetConfig, PreprocessConfig
from nscnet.runs import runinfo
from tests.fixtures_studies import blob_data, worker_env


def test_default_names_say_what_ran():
    assert runinfo.default_name(BasenetConfig(pca_dim=64, k=8), "basenet") == "basenet pca64 kmeans k=8"
    assert runinfo.default_name(BasenetConfig(k_values=(8, 16, 64)), "basenet") == "basenet pcaauto kmeans k=8..64"
    assert runinfo.default_name(BasenetConfig(reducer="umap", algorithm="hdbscan", min_cluster_size=5),
                                "basenet") == "basenet umap10 hdbscan mcs=5"
    from nscnet.presets import config as preset_config

    assert runinfo.default_name(preset_config("nscnet", "quality", k=8), "nscnet") == "nscnet small_cnn quality k=8"
    assert runinfo.default_name(NscnetConfig(backbone="small_cnn", epochs=3, k=8), "nscnet") == "nscnet small_cnn 3ep k=8"
    assert runinfo.default_name(PreprocessConfig(audio="x/recordings"), "preprocess") == "preprocess recordings mel 64x512"
    names = [runinfo.trial_name("demo-basenet", n, {"k": 8, "pca_dim": 128, "whiten": False, "l2": True})
             for n in (12, 3)]
    assert names[0] == "study demo-basenet #012 k=8 l2 pca128" and sorted(names) == names[::-1]


def test_note_holds_data_metrics_and_links():
    text = runinfo.note(name="basenet pca64 kmeans k=8", step="basenet",
                        params={"data": "demo/dataset", "n_segments": "240", "image_shape": "64x512"},
                        metrics={"silhouette": 0.1234567, "n_clusters": 8.0, "inertia": 3.0},
                        tags={"nscnet.auto": "k=8 (auto)", "nscnet.warning.noise": "ALL SEGMENTS ARE NOISE"},
                        artifacts=["figures", "figures/lda_2d.html", "figures/lda_2d.png", "assignments.csv", "raven"],
                        run_link="#/experiments/1/runs/abc")
    assert "`demo/dataset` (N = 240 segments, 64x512 images)" in text
    assert "| silhouette | 0.1235 |" in text and "| n_clusters | 8 |" in text and "inertia" not in text
    assert "[figures/lda_2d.html](#/experiments/1/runs/abc/artifacts/figures/lda_2d.html)" in text
    assert "[assignments.csv](#/experiments/1/runs/abc/artifacts/assignments.csv)" in text
    assert "Defaults resolved from the data: k=8 (auto)" in text and "**Warning:** ALL SEGMENTS" in text


def test_user_run_name_and_description_win(tracking, tmp_path):
    from nscnet.runs import tracking as T
    from nscnet.cli import main

    data = blob_data(tmp_path / "data", classes=3, per_class=10)
    assert main(["basenet", "--data", str(data), "--run_name", "my first try", "--figures", "false"]) == 0
    runs = T.search_runs("nscnet")
    run = T.get_run(runs["run_id"].iloc[0])
    assert run.info.run_name == "my first try"
    note = run.data.tags["mlflow.note.content"]
    assert "N = 30 segments" in note and "| silhouette |" in note and "assignments.csv" in note


def _study_args(data, storage):
    return ["-m", "nscnet", "study", "--data", str(data), "--params", "k", "--n-trials", "4", "--storage", str(storage),
            "--study-name", "tiny", "--overrides", "pca_dim=8,figures=false,stability_runs=0", "--compare", "false"]


def test_study_in_a_log_file_names_objective_links_trials_and_keeps_lines_whole(tracking, tmp_path):
    from nscnet.runs import tracking as T

    data = blob_data(tmp_path / "data", classes=3, per_class=10)  # 30 segments: the 64..2048 grid cannot run
    log = tmp_path / "study.log"
    env = {k: v for k, v in worker_env().items() if k != "NSCNET_PROGRESS"}
    with open(log, "wb") as out:
        done = subprocess.run([sys.executable, *_study_args(data, tmp_path / "s.journal")], cwd=tmp_path, env=env,
                              stdout=out, stderr=subprocess.STDOUT, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    assert "K grid cut to 2..29 (was 64..2048)" in text
    assert "\r" not in text  # no progress bar in a file
    results = [line for line in text.splitlines() if "basenet: " in line]
    assert len(results) == 4 and all(line.startswith("basenet: ") for line in results)
    study = optuna.load_study(study_name="tiny", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "s.journal"))))
    assert study.metric_names == ["silhouette"]
    assert {t.params["k"] for t in study.trials} <= set(range(2, 30))
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        run_id = trial.user_attrs["mlflow_run_id"]
        assert trial.user_attrs["mlflow_run_url"].endswith(f"/runs/{run_id}?workflowType=machine_learning")
        assert T.get_run(run_id).info.run_name.startswith(f"study tiny #{trial.number:03d} k=")
    runs = T.search_runs("nscnet")
    parent = runs[runs["tags.nscnet.step"] == "study"].iloc[0]
    assert parent["tags.nscnet.best_run_url"] == study.best_trial.user_attrs["mlflow_run_url"]
    assert parent["tags.nscnet.best_trial"] == str(study.best_trial.number)
    assert "K grid cut" in parent["tags.nscnet.auto"]


def test_study_on_a_terminal_writes_results_above_the_bar(tracking, tmp_path):
    data = blob_data(tmp_path / "data", classes=3, per_class=10)
    master, slave = pty.openpty()
    env = {**worker_env(), "NSCNET_PROGRESS": "", "COLUMNS": "120"}
    proc = subprocess.Popen([sys.executable, *_study_args(data, tmp_path / "t.journal")], cwd=tmp_path, env=env,
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif proc.poll() is not None:
            break
    proc.wait(30)
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert "trial" in text and "\r" in text  # a bar was drawn on the terminal
    starts = [m.start() for m in re.finditer("basenet: ", text)]
    assert len(starts) == 4
    # every result line starts a line: the bar was lifted first (\r) or the line was fresh (\n)
    assert all(text[i - 1] in "\r\n" for i in starts), [text[max(0, i - 60):i + 10] for i in starts]
