"""The synthetic song generator: deterministic, Zipf usage, SNR, separable song types."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from nscnet.audio.labels import read_audacity
from nscnet.audio.synth import F_HIGH, F_LOW, KINDS, make_song_types, run_synth, write_synthetic, zipf_probabilities
from nscnet.config import SynthConfig
from nscnet.images.dataset import read_dataset
from nscnet.runs import tracking as T
from tests.fixtures_audio import synthetic_dataset  # noqa: F401

SMALL = dict(types=4, songs=16, recordings=2)


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = write_synthetic(SynthConfig(out=str(tmp_path / "a"), seed=3, **SMALL))
    b = write_synthetic(SynthConfig(out=str(tmp_path / "b"), seed=3, **SMALL))
    write_synthetic(SynthConfig(out=str(tmp_path / "c"), seed=4, **SMALL))  # another seed, compared below
    pd.testing.assert_frame_equal(a, b)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["synth_000.txt", "synth_000.wav", "synth_001.txt", "synth_001.wav", "truth.csv"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "synth_000.wav").read_bytes() != (tmp_path / "c" / "synth_000.wav").read_bytes()


def test_song_types_are_2_to_6_syllables_in_band():
    types = make_song_types(200, np.random.default_rng(0))
    assert {len(t) for t in types} == {2, 3, 4, 5, 6}
    assert {s["kind"] for t in types for s in t} == set(KINDS)
    assert all(F_LOW <= s[f] <= F_HIGH for t in types for s in t for f in ("f0", "f1"))
    lengths = [sum(s["duration"] + s["gap"] for s in t) for t in types]
    assert 0.5 <= min(lengths) and max(lengths) <= 2.5


def test_tracks_truth_and_audio_agree(tmp_path):
    cfg = SynthConfig(out=str(tmp_path), snr_db=30, seed=1, types=5, songs=40, recordings=2)
    truth = write_synthetic(cfg)
    assert len(truth) == 40 and set(truth["label"]) <= {str(i) for i in range(5)}
    durations = truth["offset_s"] - truth["onset_s"]
    assert durations.between(0.5, 2.5).all()
    for name, songs in truth.groupby("recording"):
        lines = read_audacity(tmp_path / f"{name}.txt")
        assert [line.label for line in lines] == songs["label"].tolist()
        assert np.allclose([line.onset_s for line in lines], songs["onset_s"], atol=1e-6)
        y, sr = sf.read(tmp_path / f"{name}.wav", dtype="float32")
        assert sr == cfg.sample_rate and len(y) / sr > songs["offset_s"].max()
        inside = np.zeros(len(y), dtype=bool)
        for onset, offset in zip(songs["onset_s"], songs["offset_s"]):
            inside[int(onset * sr):int(offset * sr)] = True
        # the songs' energy lies within 1.5-8 kHz
        song = y[inside]
        spectrum = np.abs(np.fft.rfft(song)) ** 2
        freqs = np.fft.rfftfreq(len(song), 1 / sr)
        assert spectrum[(freqs >= 1400) & (freqs <= 8500)].sum() > 0.95 * spectrum.sum()
        # background noise at the requested SNR (noise measured between the songs)
        snr = 10 * np.log10(np.mean(song ** 2) / np.mean(y[~inside] ** 2))
        assert snr == pytest.approx(30, abs=2)


def test_type_usage_follows_zipf(tmp_path):
    p = zipf_probabilities(5, 1.0)
    assert p == pytest.approx(np.array([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5]) / sum([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5]))
    assert zipf_probabilities(4, 0.0) == pytest.approx([0.25] * 4)
    truth = write_synthetic(SynthConfig(out=str(tmp_path), types=4, songs=200, recordings=1, zipf_s=2.0, seed=0))
    counts = truth["type"].value_counts().reindex(range(4), fill_value=0).to_numpy()
    expected = zipf_probabilities(4, 2.0) * 200
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected) + 1)
    assert counts[0] > counts[1] > counts[3]


def test_song_types_are_separable_by_pca_and_kmeans(synthetic_dataset):  # noqa: F811
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import normalized_mutual_info_score

    data = read_dataset(synthetic_dataset)
    truth = data.truth()
    features = PCA(32, random_state=0).fit_transform(data.flat())
    clusters = KMeans(len(set(truth)), n_init=3, random_state=0).fit_predict(features)
    assert normalized_mutual_info_score(truth, clusters) >= 0.9


def test_run_synth_logs_to_mlflow(tracking, tmp_path):
    result = run_synth(SynthConfig(out=str(tmp_path / "audio"), **SMALL))
    run = T.get_run(result["run_id"])
    assert run.data.params["songs"] == "16" and run.data.tags["nscnet.step"] == "synth"
    assert run.data.metrics["songs"] == 16 and 0.5 <= run.data.metrics["song_duration_mean"] <= 2.5
    artifacts = T.list_artifacts(result["run_id"]) + T.list_artifacts(result["run_id"], "figures")
    assert "truth.csv" in artifacts and "figures/type_usage.html" in artifacts
