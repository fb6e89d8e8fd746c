"""`preprocess`: every kind of bad input ends as a skipped segment with its reason (never an
abort), the dataset layout, the cache, parallel workers, the real data, and the entry points
(CLI, MLflow run, `mlflow run`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from nscnet.cli import main as cli_main
from nscnet.config import DataError, PreprocessConfig
from nscnet.images.dataset import read_dataset
from nscnet.images.preprocess import preprocess, run_preprocess
from nscnet.runs import tracking as T
from tests.conftest import ROOT
from tests.fixtures_audio import synthetic_audio, synthetic_dataset  # noqa: F401

SR = 22050
SMALL = dict(duration_s=1.0, n_mels=16, frames=32)


def burst(seconds: float, sr: int, *spans: tuple[float, float], freq: float = 3000.0) -> np.ndarray:
    """Silence with tone bursts at the given (onset, offset) spans, float32 (n,)."""
    y = np.zeros(int(seconds * sr), dtype=np.float32)
    t = np.arange(len(y)) / sr
    for onset, offset in spans:
        inside = (t >= onset) & (t < offset)
        y[inside] = 0.5 * np.sin(2 * np.pi * freq * t[inside])
    return y


GOOD_TRACK = (
    "0.2\t0.6\tA\n"                  # 1 ok
    "1.6\t2.1\tsilent\n"             # 2 ok, all-silent -> zero image
    "0.3\t0.31\tshort\n"             # 3 ok, 10 ms: shorter than the FFT window
    "abc\t1.0\tX\n"                  # 4 not numeric
    "1.0\t1.0\tY\n"                  # 5 offset == onset
    "2.8\t3.5\tclipped\n"            # 6 runs past the end (3 s): clipped, ok
    "3.2\t3.6\tbeyond\n"             # 7 entirely past the end: skipped
    "0.2\t0.6\t../../evil/x.txt\n"   # 8 label text that looks like a path
    "0.1\t2.9\tlong\n"               # 9 longer than duration_s: cropped
)


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Path:
    """A folder with one recording for each kind of bad input, plus good ones."""
    root = tmp_path_factory.mktemp("messy")
    audio = root / "audio"
    audio.mkdir()
    sf.write(audio / "good.wav", burst(3.0, SR, (0.2, 0.6), (2.8, 3.0)), SR, subtype="PCM_16")
    (audio / "good.txt").write_text(GOOD_TRACK)
    sf.write(audio / "eight.wav", burst(1.0, 16000, (0.1, 0.5)), 16000, subtype="PCM_U8")  # resampled too
    sf.write(audio / "deep.wav", burst(1.0, SR, (0.1, 0.5)), SR, subtype="PCM_24")
    sf.write(audio / "float.wav", 1.5 * burst(1.0, SR, (0.1, 0.5)), SR, subtype="FLOAT")
    nan = burst(1.0, SR, (0.1, 0.5))
    nan[3000:3100] = np.nan
    sf.write(audio / "nan.wav", nan, SR, subtype="FLOAT")
    sf.write(audio / "stereo.wav", np.stack([burst(1.0, SR, (0.1, 0.5)), burst(1.0, SR, (0.2, 0.4), freq=5000)], 1), SR)
    for name in ("eight", "deep", "float", "nan", "stereo"):
        (audio / f"{name}.txt").write_text("0.1\t0.5\tB\n")
    data = (audio / "good.wav").read_bytes()
    (audio / "truncated.wav").write_bytes(data[: len(data) // 3])
    (audio / "truncated.txt").write_text("0.1\t0.5\tC\n0.6\t0.7\tC\n")
    (audio / "text.wav").write_text("not audio at all\n" * 50)
    (audio / "text.txt").write_text("0.1\t0.5\tD\n")
    sf.write(audio / "empty.wav", np.zeros(0, dtype=np.float32), SR)
    (audio / "empty.txt").write_text("0.1\t0.5\tE\n")
    sf.write(audio / "notrack.wav", burst(1.0, SR, (0.1, 0.5)), SR)   # recording without a track
    (audio / "orphan.txt").write_text("0.1\t0.5\tF\n0.6\t0.9\tF\n")    # track without a recording
    return root


def _config(root: Path, **changes) -> PreprocessConfig:
    return PreprocessConfig(audio=str(root / "audio"), out=str(root / changes.pop("name", "dataset")),
                            **{**SMALL, **changes})


def test_bad_inputs_become_skipped_segments_with_reasons(messy):
    result = preprocess(_config(messy))
    assert result.skipped == {"not_numeric": 1, "offset_not_after_onset": 1, "beyond_audio_end": 1,
                              "truncated_audio": 2, "unreadable_audio": 1, "empty_audio": 1, "no_recording": 2}
    assert result.n_ok == 6 + 5 and result.n_segments == 9 + 5 + 2 + 1 + 1 + 2
    assert result.recordings_without_track == ["notrack.wav"]
    assert result.tracks_without_recording == ["orphan.txt"]
    summary = result.summary()
    assert summary.startswith("preprocess: 11 ok, 9 skipped (") and "2 no_recording" in summary
    assert "1 recording(s) without track" in summary and "\n" not in summary

    data = read_dataset(result.path)
    table = data.all_segments.set_index("segment_id")
    assert len(table) == result.n_segments  # nothing lost: skipped segments stay in segments.csv
    assert data.images.dtype == np.float16 and data.images.shape == (11, 16, 32)
    images = np.asarray(data.images, dtype=np.float32)
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    row = lambda sid: int(table.loc[sid, "row"])  # noqa: E731
    assert np.all(images[row("good#1")] == 0)  # all-silent segment: zeros, no NaN or -inf
    assert images[row("good#0")].max() == 1 and images[row("good#2")].max() == 1  # short segment has content
    assert images[row("nan#0")].max() == 1 and np.isfinite(images[row("nan#0")]).all()
    assert "NaN samples" in table.loc["nan#0", "detail"]
    for name in ("eight", "deep", "float", "stereo"):
        assert table.loc[f"{name}#0", "status"] == "ok" and images[row(f"{name}#0")].max() == 1
    assert table.loc["good#5", "offset_s"] == pytest.approx(3.0) and "clipped" in table.loc["good#5", "detail"]
    assert table.loc["good#8", "cropped"] and not table.loc["good#0", "cropped"]
    assert table.loc["good#3", "status"] == "not_numeric" and "line 4" in table.loc["good#3", "detail"]
    assert table.loc["good#6", "status"] == "beyond_audio_end" and table.loc["good#6", "row"] == -1
    assert "truncated.wav" in table.loc["truncated#1", "detail"]
    assert "text.wav" in table.loc["text#0", "detail"] and "empty.wav" in table.loc["empty#0", "detail"]
    # the label text is kept as it was and never becomes a path
    assert table.loc["good#7", "label"] == "../../evil/x.txt" and table.loc["good#7", "status"] == "ok"
    assert not any("evil" in str(p) for p in messy.parent.rglob("*"))
    assert np.array_equal(images[row("good#7")], images[row("good#0")])
    # ok rows are the images in order
    assert data.segments["row"].tolist() == list(range(11))
    meta = json.loads((result.path / "preprocess.json").read_text())
    assert meta["params"]["duration_s"] == 1.0 and meta["counts"]["ok"] == 11 and len(meta["content_hash"]) == 64


def test_channel_selection(messy):
    result = preprocess(_config(messy, name="channel1", channel=1))
    table = pd.read_csv(result.path / "segments.csv", keep_default_na=False).set_index("segment_id")
    assert table.loc["stereo#0", "status"] == "ok" and table.loc["stereo#0", "channel"] == 1
    assert table.loc["deep#0", "status"] == "channel_missing"
    assert "deep.wav" in table.loc["deep#0", "detail"] and "channel 1" in table.loc["deep#0", "detail"]
    channel0 = read_dataset(preprocess(_config(messy, name="channel0")).path)
    channel1 = read_dataset(result.path)
    left = channel0.images[int(channel0.segments.set_index("segment_id").loc["stereo#0", "row"])]
    right = channel1.images[int(channel1.segments.set_index("segment_id").loc["stereo#0", "row"])]
    assert not np.array_equal(left, right)  # the other channel holds another sound


def test_cache_reused_until_inputs_or_parameters_change(tmp_path, synthetic_audio):  # noqa: F811
    audio = tmp_path / "audio"
    shutil.copytree(synthetic_audio, audio)
    cfg = PreprocessConfig(audio=str(audio), out=str(tmp_path / "ds"), duration_s=3.0, n_mels=16, frames=16)
    first = preprocess(cfg)
    assert not first.cached
    stamp = (tmp_path / "ds" / "spectrograms.npy").stat().st_mtime_ns
    again = preprocess(cfg)
    assert again.cached and again.content_hash == first.content_hash and again.n_ok == first.n_ok
    assert "reused cached dataset" in again.summary()
    assert (tmp_path / "ds" / "spectrograms.npy").stat().st_mtime_ns == stamp
    # workers do not change the content: still cached
    assert preprocess(PreprocessConfig(**{**cfg.__dict__, "workers": 2})).cached
    changed = preprocess(PreprocessConfig(**{**cfg.__dict__, "highpass_hz": 1000.0}))
    assert not changed.cached and changed.content_hash != first.content_hash
    track = audio / "synth_000.txt"
    track.write_text(track.read_text().replace("\t0\n", "\t9\n", 1))
    relabelled = preprocess(PreprocessConfig(**{**cfg.__dict__, "highpass_hz": 1000.0}))
    assert not relabelled.cached and relabelled.content_hash != changed.content_hash
    assert not preprocess(PreprocessConfig(**{**cfg.__dict__, "highpass_hz": 1000.0, "force": True})).cached


def test_two_workers_write_the_same_dataset(messy):
    one = preprocess(_config(messy, name="w1"))
    two = preprocess(_config(messy, name="w2", workers=2))
    assert (one.path / "segments.csv").read_bytes() == (two.path / "segments.csv").read_bytes()
    assert np.array_equal(np.load(one.path / "spectrograms.npy"), np.load(two.path / "spectrograms.npy"))


@pytest.mark.parametrize("encoding, height", [("chroma", 12), ("mfcc", 20), ("waveform", 8)])
def test_other_encodings(messy, encoding, height):
    result = preprocess(_config(messy, name=f"enc-{encoding}", encoding=encoding, n_mels=height))
    images = np.asarray(read_dataset(result.path).images, dtype=np.float32)
    assert images.shape == (11, height, 32) and np.isfinite(images).all()
    assert images.min() >= 0 and images.max() <= 1


def test_no_tracks_at_all_is_a_data_error(tmp_path):
    sf.write(tmp_path / "a.wav", burst(0.5, SR, (0.1, 0.2)), SR)
    with pytest.raises(DataError, match="no label tracks"):
        preprocess(PreprocessConfig(audio=str(tmp_path), out=str(tmp_path / "ds")))


def test_bengalese_finch_subset(bengalese, tmp_path):
    """Real recordings, 10 of their syllable tracks: every syllable ok, labels as syllables.csv."""
    labels = tmp_path / "labels"
    labels.mkdir()
    stems = sorted(p.stem for p in (bengalese / "syllables").glob("*.txt"))[:10]
    for stem in stems:
        shutil.copy(bengalese / "syllables" / f"{stem}.txt", labels)
    cfg = PreprocessConfig(audio=str(bengalese / "recordings"), labels=str(labels), out=str(tmp_path / "ds"),
                           duration_s=0.3, highpass_hz=500, frames=64)
    result = preprocess(cfg)
    table = pd.read_csv(bengalese / "syllables.csv", dtype={"label": str})
    table = table[table["audio_file"].isin([f"recordings/{s}.wav" for s in stems])]
    assert result.n_ok == len(table) > 400 and result.n_skipped == 0
    assert len(result.recordings_without_track) == 135 - 10  # reported, not fatal
    data = read_dataset(result.path)
    expected = table.assign(recording=table["audio_file"].str.slice(len("recordings/")))
    got = data.segments[["recording", "onset_s", "offset_s", "label"]]
    key = ["recording", "onset_s"]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True),
                                  expected[["recording", "onset_s", "offset_s", "label"]].sort_values(key)
                                  .reset_index(drop=True), check_dtype=False)
    images = np.asarray(data.images, dtype=np.float32)
    assert images.shape == (len(table), 64, 64)
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    assert result.stats["cropped_share"] == 0 and 0.05 < result.stats["duration_median"] < 0.15


def test_cli_preprocess_logs_a_run(tracking, synthetic_audio, capsys):  # noqa: F811
    out = Path(tracking[len("sqlite:///"):]).parent / "ds"
    argv = ["preprocess", "--audio", str(synthetic_audio), "--out", str(out), "--duration-s", "3",
            "--n_mels", "16", "--frames", "16", "--experiment", "audio-test"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "preprocess: 120 ok, 0 skipped" in printed
    runs = T.search_runs("audio-test")
    assert len(runs) == 1
    run = T.get_run(runs["run_id"][0])
    metrics = run.data.metrics
    assert metrics["segments_ok"] == 120 and metrics["segments_skipped"] == 0 and metrics["segments_per_second"] > 0
    assert 0.5 <= metrics["duration_median"] <= metrics["duration_p97"] <= 2.5 and metrics["cropped_share"] == 0
    assert run.data.params["duration_s"] == "3.0" and run.data.tags["nscnet.content_hash"]
    artifacts = T.list_artifacts(run.info.run_id, "dataset") + T.list_artifacts(run.info.run_id, "figures")
    assert {"dataset/segments.csv", "dataset/preprocess.json", "figures/duration_boxplot.html",
            "figures/duration_histogram.html"} <= set(artifacts)


def test_cli_channel_the_files_lack_is_a_clean_error(tracking, messy, capsys):
    audio = Path(tracking[len("sqlite:///"):]).parent / "mono"
    audio.mkdir()
    shutil.copy(messy / "audio" / "deep.wav", audio)
    shutil.copy(messy / "audio" / "deep.txt", audio)
    assert cli_main(["preprocess", "--audio", str(audio), "--out", str(audio.parent / "ds"), "--channel", "3"]) == 1
    err = capsys.readouterr().err
    assert "deep.wav" in err and "channel 3" in err and "Traceback" not in err
    with pytest.raises(DataError, match="deep.wav"):
        run_preprocess(PreprocessConfig(audio=str(audio), out=str(audio.parent / "ds"), channel=3))


def test_mlflow_run_entry_point(tracking, synthetic_audio, tmp_path):  # noqa: F811
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")}
    env.update(PYTHONPATH=str(ROOT), MLFLOW_TRACKING_URI=tracking,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "ds"
    command = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "preprocess", "--env-manager", "local",
               "--experiment-name", "mlproject-test", "-P", f"audio={synthetic_audio}", "-P", f"out={out}",
               "-P", "duration_s=3", "-P", "n_mels=16", "-P", "frames=16", "-P", "experiment=mlproject-test"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_dataset(out).images.shape == (120, 16, 16)
    runs = T.search_runs("mlproject-test")
    assert len(runs) == 1 and runs["metrics.segments_ok"][0] == 120
