"""Zipf analysis: the fit recovers a known exponent, the bootstrap KS test holds its level and
rejects non-Zipf sizes, bad input fails clearly, and `run_zipf` logs a linked MLflow run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nscnet.analysis import zipf
from nscnet.config import BasenetConfig, ConfigError, DataError, ZipfConfig
from nscnet.runs import tracking as track  # `tracking` is the fixture's name


def zipf_sample(seed: int, s: float = 1.0, n_types: int = 64, n_songs: int = 10_000) -> np.ndarray:
    """Cluster ids of n_songs songs drawn from a finite Zipf(s) over n_types types."""
    rng = np.random.default_rng(seed)
    return rng.choice(n_types, size=n_songs, p=zipf.zipf_pmf(s, n_types))


def uniform_sizes(seed: int, n_types: int = 64) -> np.ndarray:
    """Cluster sizes drawn uniformly at random (about 10,000 songs): a linear, not a power, rank law."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.integers(1, 313, size=n_types))[::-1]


def test_rank_sizes_orders_counts_and_drops_noise():
    assert zipf.rank_sizes([4, 4, 4, -1, -1, 7, 9, 9]).tolist() == [3, 2, 1]
    assert zipf.rank_sizes([-1, -1]).tolist() == []


def test_fit_recovers_s_of_a_finite_zipf_sample():
    sizes = zipf.rank_sizes(zipf_sample(seed=0))
    s = zipf.fit_zipf_s(sizes)
    assert abs(s - 1.0) < 0.05
    # the vectorised bootstrap solver finds the same maximum
    assert zipf.fit_zipf_s_many(sizes[None, :])[0] == pytest.approx(s, abs=1e-6)
    # and it is a maximum of the log-likelihood
    log_rank = np.log(np.arange(1, len(sizes) + 1))
    loglik = [-t * sizes @ log_rank - sizes.sum() * np.log(np.exp(-t * log_rank).sum()) for t in (s - 0.01, s, s + 0.01)]
    assert loglik[1] > max(loglik[0], loglik[2])


def test_bootstrap_ks_rejects_a_true_zipf_at_most_3_times_in_20():
    pvalues = []
    for seed in range(20):
        sizes = zipf.rank_sizes(zipf_sample(seed=seed))
        s = zipf.fit_zipf_s(sizes)
        pvalues.append(zipf.bootstrap_gof(sizes, s, draws=200, seed=seed).ks_pvalue)
    assert sum(p < 0.05 for p in pvalues) <= 3, pvalues


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_ks_rejects_uniformly_drawn_sizes(seed):
    sizes = uniform_sizes(seed)
    s = zipf.fit_zipf_s(sizes)
    result = zipf.bootstrap_gof(sizes, s, draws=999, seed=seed)
    assert result.ks_pvalue < 0.01
    assert result.chi2_pvalue < 0.01


def test_equal_usage_is_zipf_with_s_zero():
    # every type used equally is Zipf's law with s = 0: inside the family, so it cannot be rejected
    sizes = np.full(20, 50)
    assert zipf.fit_zipf_s(sizes) == pytest.approx(0.0, abs=1e-6)
    assert zipf.bootstrap_gof(sizes, 0.0, draws=50, seed=0).ks == pytest.approx(0.0, abs=1e-12)


def test_bootstrap_is_seeded():
    sizes = zipf.rank_sizes(zipf_sample(seed=3, n_songs=2000))
    a = zipf.bootstrap_gof(sizes, 1.0, draws=100, seed=7)
    b = zipf.bootstrap_gof(sizes, 1.0, draws=100, seed=7)
    assert a.ks_pvalue == b.ks_pvalue and np.array_equal(a.s_draws, b.s_draws)


def test_chi2_bins_are_merged_until_none_expects_below_5():
    sizes = zipf.rank_sizes(zipf_sample(seed=4, n_types=200, n_songs=1500))
    s = zipf.fit_zipf_s(sizes)
    expected = zipf.expected_counts(s, len(sizes), int(sizes.sum()))
    starts = zipf.merge_bins(expected)
    merged = np.add.reduceat(expected, starts)
    assert merged.min() >= 5.0 and merged.sum() == pytest.approx(expected.sum())
    assert 3 <= len(starts) < len(sizes)
    statistic, pvalue, used = zipf.chi2_test(sizes, s)
    assert np.array_equal(used, starts) and statistic > 0 and 0 < pvalue <= 1


def test_statistics_include_the_papers_ks_and_powerlaw_comparisons():
    sizes = zipf.rank_sizes(zipf_sample(seed=5))
    metrics, _ = zipf.zipf_statistics(sizes, bootstrap=100, seed=0)
    assert 0 <= metrics["zipf_ks2_paper_pvalue"] <= 1
    assert metrics["zipf_s_boot_low"] < metrics["zipf_s"] < metrics["zipf_s_boot_high"]
    assert metrics["powerlaw_alpha"] > 1
    for other in ("lognormal", "exponential"):
        assert np.isfinite(metrics[f"powerlaw_vs_{other}_R"]) and 0 <= metrics[f"powerlaw_vs_{other}_p"] <= 1


def test_fewer_than_3_clusters_is_a_clear_error_and_logs_no_run(tracking, tmp_path):
    bad = {"got 2": [0, 0, 1, 1, -1], "got 1": [5] * 30, "got 0": [-1] * 4}  # 2, all in one, all noise
    for found, clusters in bad.items():
        path = tmp_path / f"{found}.csv"
        pd.DataFrame({"segment_id": range(len(clusters)), "cluster": clusters}).to_csv(path, index=False)
        with pytest.raises(DataError, match=f"at least 3 non-empty clusters.*{found}"):
            zipf.run_zipf(ZipfConfig(assignments=str(path), bootstrap=50))
        with pytest.raises(DataError, match="at least 3"):
            zipf.fit_zipf_s(zipf.rank_sizes(clusters))
    assert len(track.search_runs("nscnet")) == 0  # no run with made-up numbers


def test_run_without_assignments_and_unknown_run_are_clear_errors(tracking):
    with track.start_run(BasenetConfig(), "basenet") as parent:
        track.log_metrics({"silhouette": 0.1})
    with pytest.raises(DataError, match="assignments.csv"):
        zipf.run_zipf(ZipfConfig(run_id=parent.info.run_id, bootstrap=50))
    with pytest.raises(DataError, match="no MLflow run"):
        zipf.run_zipf(ZipfConfig(run_id="0123456789abcdef", bootstrap=50))
    with pytest.raises(ConfigError, match="run_id"):
        zipf.run_zipf(ZipfConfig())


def test_assignments_without_cluster_column_is_a_clear_error(tmp_path):
    path = tmp_path / "a.csv"
    pd.DataFrame({"segment_id": [1, 2], "label": [0, 1]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="no 'cluster' column"):
        zipf.read_assignments(path)


def test_run_zipf_logs_a_run_linked_to_the_clustering_run(tracking, tmp_path, monkeypatch):
    monkeypatch.setenv("NSCNET_FIGURE_PNG", "false")  # PNG export is tested with tracking; HTML suffices here
    clusters = zipf_sample(seed=6, s=1.2, n_types=30, n_songs=3000)
    clusters[:100] = -1  # noise songs are left out of the fit
    path = tmp_path / "assignments.csv"
    pd.DataFrame({"segment_id": [f"r#{i}" for i in range(len(clusters))], "cluster": clusters}).to_csv(path, index=False)
    with track.start_run(BasenetConfig(), "basenet") as parent:
        track.log_artifact(path)
    parent_id = parent.info.run_id

    metrics = zipf.run_zipf(ZipfConfig(run_id=parent_id, bootstrap=200))

    runs = track.search_runs("nscnet")
    child = runs[runs["tags.nscnet.step"] == "zipf"].iloc[0]
    assert metrics["run_id"] == child["run_id"]
    assert child["tags.nscnet.parent_run"] == parent_id
    assert child["tags.mlflow.parentRunId"] == parent_id  # shown nested in the MLflow UI
    assert track.get_run(parent_id).data.tags["nscnet.zipf_run"] == child["run_id"]
    assert abs(child["metrics.zipf_s"] - 1.2) < 0.1 and child["metrics.zipf_s"] == metrics["zipf_s"]
    for key in ("zipf_ks_pvalue", "zipf_chi2_pvalue", "zipf_ks2_paper_pvalue", "chao1", "ace"):
        assert 0 <= child[f"metrics.{key}"], key
    assert child["metrics.n_clusters"] == 30 and child["metrics.noise_fraction"] == pytest.approx(100 / 3000)
    artifacts = set(track.list_artifacts(child["run_id"])) | set(track.list_artifacts(child["run_id"], "figures"))
    assert {"zipf_ranks.csv", "zipf.json", "figures/zipf_linear.html", "figures/zipf_loglog.html",
            "figures/accumulation.html"} <= artifacts
    ranks = pd.read_csv(track.download_artifact(child["run_id"], "zipf_ranks.csv", tmp_path / "dl"))
    assert ranks["size"].is_monotonic_decreasing and ranks["size"].sum() == 2900
    assert ranks["expected"].sum() == pytest.approx(2900)

    # the same analysis from the CSV path gives the same numbers (seeded bootstrap)
    again = zipf.run_zipf(ZipfConfig(assignments=str(path), bootstrap=200))
    assert again["zipf_s"] == metrics["zipf_s"] and again["zipf_ks_pvalue"] == metrics["zipf_ks_pvalue"]


@pytest.mark.slow
def test_synthetic_songs_clustered_at_the_true_k_give_back_their_zipf_s(tracking, tmp_path, monkeypatch):
    """synth (zipf_s 1.3) -> preprocess -> BASENet k-means at the true K -> run_zipf: s within 0.15."""
    from tests.conftest import require

    try:
        from nscnet.models.basenet import run_basenet
        from tests.fixtures_audio import make_synthetic_dataset
    except ImportError as exc:
        require(False, f"synthetic songs and BASENet are needed ({exc})")
    monkeypatch.setenv("NSCNET_FIGURE_PNG", "false")
    true_s, types = 1.3, 8
    # 64 x 128 images: at 64 x 64 (47 ms a frame) k-means at K = 8 merged two look-alike types
    data = make_synthetic_dataset(tmp_path, synth=dict(types=types, songs=800, recordings=2, zipf_s=true_s, seed=0),
                                  images=dict(frames=128))
    clustering = run_basenet(BasenetConfig(data=str(data), k=types, pca_dim=64, whiten=False, l2=False, seed=0))

    metrics = zipf.run_zipf(ZipfConfig(run_id=clustering["run_id"], bootstrap=200))

    assert metrics["n_clusters"] == types
    assert abs(metrics["zipf_s"] - true_s) < 0.15
    assert metrics["zipf_ks_pvalue"] > 0.01  # a Zipf sample, correctly clustered, is not rejected
