"""Bad input end to end (issue 12), where a unit test is not enough: HTML and path-like labels
from a track to the logged figure, and a dataset folder deleted while a study works on it.
The rest of the list lives beside its code: truncated, empty and non-audio files
(test_audio_io, test_preprocess), label encodings and line ends (test_labels), one cluster
(test_zipf), k larger than N (test_basenet, test_cluster), unknown run ids (test_zipf,
test_predict, test_nscnet, test_tracking)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import optuna
import pandas as pd
import soundfile as sf
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from nscnet.cli import main
from nscnet.runs import tracking as trk
from tests.conftest import ROOT
from tests.fixtures_cluster import make_blob_dataset

SR = 22050
HTML_LABEL = "<script>alert(1)</script><img src=x onerror=alert(2)>"
PATH_LABEL = "../../escaped/evil.txt"


def _bursts(spans, freq):
    y = np.zeros(int(4.0 * SR), dtype=np.float32)
    t = np.arange(len(y)) / SR
    for onset, offset in spans:
        inside = (t >= onset) & (t < offset)
        y[inside] = 0.5 * np.sin(2 * np.pi * freq * t[inside])
    return y


def test_html_and_path_like_labels_stay_text_from_track_to_figure(tracking, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NSCNET_FIGURE_PNG", "false")
    audio = tmp_path / "audio"
    audio.mkdir()
    lines = []
    for i, (label, freq) in enumerate([(HTML_LABEL, 2000.0), (PATH_LABEL, 6000.0)]):
        spans = [(0.2 + 0.6 * j + 0.05 * i, 0.5 + 0.6 * j + 0.05 * i) for j in range(3)]
        sf.write(audio / f"rec{i}.wav", _bursts(spans, freq), SR, subtype="PCM_16")
        (audio / f"rec{i}.txt").write_text("".join(f"{a:.2f}\t{b:.2f}\t{label}\n" for a, b in spans))
        lines += [label] * 3
    before = set(tmp_path.parent.iterdir())
    assert main(["preprocess", "--audio", str(audio), "--out", str(tmp_path / "ds"), "--duration_s", "0.5",
                 "--n_mels", "16", "--frames", "16"]) == 0
    segments = pd.read_csv(tmp_path / "ds" / "segments.csv", dtype=str)
    assert sorted(segments["label"]) == sorted(lines)  # kept verbatim, as text
    assert main(["basenet", "--data", str(tmp_path / "ds"), "--k", "2", "--pca_dim", "4", "--truth", "true"]) == 0
    run_id = [line.split("=", 1)[1] for line in capsys.readouterr().out.splitlines() if line.startswith("run_id=")][-1]
    page = trk.download_artifact(run_id, "figures/contingency.html", tmp_path / "dl").read_text()
    assert HTML_LABEL not in page and "<img src=x" not in page  # never unescaped into the page
    assert "\\u003cscript\\u003ealert(1)\\u003c\\u002fscript\\u003e" in page  # but there, as JSON text
    assert set(tmp_path.parent.iterdir()) == before and not list(tmp_path.rglob("evil.txt"))  # never a path
    tracks = trk.download_artifact(run_id, "audacity", tmp_path / "dl")
    assert sorted(p.name for p in tracks.iterdir()) == ["rec0.txt", "rec1.txt"]  # named by recording only


def test_a_dataset_folder_deleted_during_a_study_stops_it_with_one_line(tracking, tmp_path):
    data = make_blob_dataset(tmp_path / "ds", classes=3, per_class=20)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "NSCNET_FIGURE_PNG": "false"}
    study = subprocess.Popen([sys.executable, "-m", "nscnet", "study", "--model", "basenet", "--data", str(data),
                              "--n_trials", "40", "--params", "k", "--k_min", "2", "--k_max", "20", "--refine_k",
                              "false", "--overrides", "pca_dim=8,n_init=1", "--study_name", "doomed"],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list((tmp_path / "mlartifacts").rglob("assignments.csv")) and study.poll() is None:
            assert time.monotonic() < deadline, "no trial finished"
            time.sleep(0.1)
        shutil.rmtree(data)  # a trial has finished: the next ones find no dataset
        out, err = study.communicate(timeout=240)
    finally:
        if study.poll() is None:
            study.kill()
    assert study.returncode == 1, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("nscnet study: error:")]
    assert len(errors) == 1 and str(data) in errors[0] and "not a dataset folder" in errors[0], err[-3000:]
    assert "Traceback" not in err
    runs = trk.search_runs("nscnet")
    assert "RUNNING" not in set(runs["status"])
    assert set(runs[runs["tags.nscnet.step"] == "study"]["status"]) == {"FAILED"}
    trials = optuna.load_study(study_name="doomed", storage=JournalStorage(JournalFileBackend(
        str(tmp_path / "optuna.journal")))).trials
    assert "RUNNING" not in {t.state.name for t in trials} and "COMPLETE" in {t.state.name for t in trials}
