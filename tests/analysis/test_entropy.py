"""Chromagram note entropy: tones are near 0 bits, noise near log2(12), silence is left out,
and `run_entropy` logs per-segment, per-recording and overall results from real audio files."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile

from nscnet.analysis.entropy import MAX_BITS, chroma_entropy, run_entropy, segment_entropy
from nscnet.config import EntropyConfig
from nscnet.runs import tracking as track  # `tracking` is the fixture's name

SR = 22050


def tone(freq_hz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.5 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def test_chroma_entropy_of_one_class_and_of_even_spread():
    assert chroma_entropy(np.eye(12)[:, [0, 5, 11]]) == 0.0
    assert chroma_entropy(np.ones((12, 7))) == pytest.approx(MAX_BITS)
    # masked and all-zero frames are left out, not counted as uniform
    chroma = np.concatenate([np.eye(12)[:, :2], np.ones((12, 3)), np.zeros((12, 4))], axis=1)
    assert chroma_entropy(chroma, np.array([True, True, False, False, False, True, True, True, True])) == 0.0
    assert np.isnan(chroma_entropy(np.zeros((12, 5))))


@pytest.mark.parametrize("freq_hz", [1046.5, 2093.0, 3520.0, 6271.9])
def test_pure_tone_is_under_half_a_bit(freq_hz):
    assert segment_entropy(tone(freq_hz), SR, n_fft=2048, silence_db=-60) < 0.5


def test_white_noise_is_over_3_3_bits():
    rng = np.random.default_rng(0)
    assert segment_entropy(rng.standard_normal(SR).astype(np.float32), SR, n_fft=2048, silence_db=-60) > 3.3


def test_silent_frames_are_left_out():
    song = tone(2093.0, 0.5)
    fade = np.hanning(2 * 441).astype(np.float32)  # 20 ms fades: no click at the edges
    song[:441] *= fade[:441]
    song[-441:] *= fade[441:]
    padded = np.concatenate([np.zeros(SR, np.float32), song, 1e-6 * np.ones(SR, np.float32)])
    # 2 s of silence around 0.5 s of tone: counted as uniform, they would pull the mean above 2 bits
    assert segment_entropy(padded, SR) < 0.5
    assert segment_entropy(padded, SR) == pytest.approx(segment_entropy(song, SR), abs=0.1)
    assert np.isnan(segment_entropy(np.zeros(SR, np.float32), SR))


def test_run_entropy_on_written_recordings(tracking, tmp_path, monkeypatch):
    monkeypatch.setenv("NSCNET_FIGURE_PNG", "false")
    rng = np.random.default_rng(0)
    audio = tmp_path / "audio"
    audio.mkdir()
    gap = np.zeros(SR // 2, np.float32)
    # recording "tonal": three whistles; recording "noisy": three noise bursts
    tonal = np.concatenate([gap, tone(2093.0, 0.3), gap, tone(3135.96, 0.3), gap, tone(4186.0, 0.3), gap])
    noisy = np.concatenate([gap] + [x for _ in range(3) for x in (0.3 * rng.standard_normal(int(0.3 * SR)), gap)])
    labels = "0.5\t0.8\ta\n1.3\t1.6\tb\n2.1\t2.4\tc\n"
    for name, y in (("tonal", tonal), ("noisy", noisy.astype(np.float32))):
        soundfile.write(audio / f"{name}.wav", y, SR)
        (audio / f"{name}.txt").write_text(labels)

    metrics = run_entropy(EntropyConfig(audio=str(audio), highpass_hz=500.0))

    assert metrics["entropy_segments"] == 6 and metrics["entropy_skipped"] == 0
    runs = track.search_runs("nscnet")
    run_id = runs.iloc[0]["run_id"]
    assert metrics["run_id"] == run_id
    assert runs.iloc[0]["metrics.entropy_mean"] == pytest.approx(metrics["entropy_mean"])
    per_recording = pd.read_csv(track.download_artifact(run_id, "entropy_recordings.csv", tmp_path / "dl"))
    means = dict(zip(per_recording["recording"], per_recording["entropy_mean"]))
    assert means["tonal.wav"] < 0.5 and means["noisy.wav"] > 3.3
    segments = pd.read_csv(track.download_artifact(run_id, "entropy.csv", tmp_path / "dl"))
    assert len(segments) == 6 and segments["entropy_bits"].between(0, MAX_BITS).all()
    assert "figures/entropy_histogram.html" in track.list_artifacts(run_id, "figures")


def test_run_entropy_on_real_bengalese_finch_songs(tracking, tmp_path, monkeypatch, bengalese):
    monkeypatch.setenv("NSCNET_FIGURE_PNG", "false")
    audio, labels = tmp_path / "audio", tmp_path / "labels"
    audio.mkdir()
    labels.mkdir()
    for stem in ("0", "1"):  # two recordings, read in place through links; their label tracks copied
        (audio / f"{stem}.wav").symlink_to(bengalese / "recordings" / f"{stem}.wav")
        shutil.copy(bengalese / "syllables" / f"{stem}.txt", labels)
    expected = sum(1 for stem in ("0", "1") for line in (labels / f"{stem}.txt").read_text().splitlines() if line.strip())

    metrics = run_entropy(EntropyConfig(audio=str(audio), labels=str(labels)))

    assert metrics["entropy_segments"] + metrics["entropy_skipped"] == expected
    assert metrics["entropy_segments"] >= 0.9 * expected
    assert 0.5 < metrics["entropy_mean"] < MAX_BITS and metrics["entropy_std"] > 0


def test_run_entropy_without_audio_or_labels_is_a_clear_error(tmp_path):
    from nscnet.config import DataError

    with pytest.raises(DataError, match="does not exist"):
        run_entropy(EntropyConfig(audio=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no labelled segments"):
        run_entropy(EntropyConfig(audio=str(tmp_path / "empty")))
