"""k-means (sklearn and faiss), OPTICS, HDBSCAN and the metrics, on data with a known answer."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from nscnet.config import ClusterParams, ConfigError, DataError
from nscnet.clustering.cluster import (free_cores, fit_clusters, internal_metrics, kmeans, kmeans_plusplus,
                            kmeans_plusplus_restarts, stability, sweep_seeds, truth_metrics)
from nscnet.clustering.cluster import davies_bouldin


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(n_samples=300, centers=5, n_features=8, cluster_std=0.5, random_state=1)
    return x.astype(np.float32), y


@pytest.mark.parametrize("backend", ["sklearn", "faiss", "auto"])
def test_kmeans_recovers_separated_blobs(blobs, backend):
    x, y = blobs
    result = kmeans(x, 5, n_init=3, seed=0, backend=backend)
    assert result.labels.shape == (300,) and result.centroids.shape == (5, 8)
    assert truth_metrics(result.labels, y)["nmi_truth"] > 0.99
    # inertia is the sum of squared distances to the assigned centroid
    expected = ((x - result.centroids[result.labels]) ** 2).sum()
    assert result.inertia == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("structured", [True, False])
def test_faiss_and_sklearn_agree_on_inertia_within_one_percent(structured):
    # both start from greedy k-means++ seeds; random seeds (faiss' own) were 3x worse on blobs
    if structured:
        x, _ = make_blobs(n_samples=2000, centers=50, n_features=16, cluster_std=1.0, random_state=2)
    else:
        x = np.random.default_rng(2).normal(size=(2000, 16))
    a = kmeans(x, 64, n_init=2, seed=0, backend="sklearn")
    b = kmeans(x, 64, n_init=2, seed=0, backend="faiss")
    assert abs(a.inertia - b.inertia) / a.inertia < 0.01


@pytest.mark.parametrize("k", [2, 9, 200])
def test_davies_bouldin_and_calinski_harabasz_are_scikit_learns(k):
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score

    from nscnet.clustering.cluster import calinski_harabasz

    x = np.random.default_rng(k).normal(size=(1000, 12)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, k, size=1000) * 3  # not 0..k-1
    assert davies_bouldin(x, labels) == pytest.approx(davies_bouldin_score(x, labels), rel=1e-6)
    assert calinski_harabasz(x, labels) == pytest.approx(calinski_harabasz_score(x, labels), rel=1e-6)


def test_restarts_seeded_together_are_the_restarts_seeded_alone():
    # one product per step for all restarts (speed): each restart's seeds are what it gets alone
    x = np.random.default_rng(0).normal(size=(600, 16)).astype(np.float32)
    together = kmeans_plusplus_restarts(x, 24, seeds=[3, 4, 5])
    for seed, seeds in zip((3, 4, 5), together):
        np.testing.assert_array_equal(seeds, kmeans_plusplus(x, 24, seed=seed))
    assert not np.array_equal(together[0], together[1])


def test_seeding_from_the_distance_matrix_is_seeding_from_a_product_per_step():
    # up to GRAM_MAX_BYTES the candidates' squared distances are rows of the (N, N) matrix made
    # once; beyond, a product per step: the same seeds (float32 round-off only)
    x = np.random.default_rng(3).normal(size=(700, 16)).astype(np.float32)
    from_matrix = kmeans_plusplus_restarts(x, 40, seeds=[0, 1, 2])
    per_step = kmeans_plusplus_restarts(x, 40, seeds=[0, 1, 2], gram_max_bytes=0)
    for a, b in zip(from_matrix, per_step):
        np.testing.assert_array_equal(a, b)
    rows = [int(np.flatnonzero((x == s).all(axis=1))[0]) for s in from_matrix[0]]
    assert len(set(rows)) == 40  # distinct data points


def test_the_distance_matrix_is_allocated_in_small_pages_and_numpy_is_left_as_it_was():
    # numpy's huge-page advice is off only while the seeding allocates its (N, N) matrix
    multiarray = pytest.importorskip("numpy._core.multiarray")
    from nscnet.clustering.cluster import _small_pages

    before = multiarray._set_madvise_hugepage(True)
    try:
        with _small_pages():
            assert multiarray._set_madvise_hugepage(False) is False  # off inside (the call reports the old value)
        assert multiarray._set_madvise_hugepage(True) is True  # restored after
    finally:
        multiarray._set_madvise_hugepage(before)


def test_a_sweep_seeds_once_at_its_largest_k_and_each_k_starts_from_the_first_k_seeds():
    # k-means++ is sequential: the first k of the largest K's seeds are the k-means++ seeds of k
    # (with the largest K's greedy trials), so every K of a sweep starts from them
    pytest.importorskip("faiss")
    x = np.random.default_rng(1).normal(size=(900, 8)).astype(np.float32)
    ks = (128, 200, 256)
    seeds = sweep_seeds(x, ks, n_init=2, seed=5)
    assert len(seeds) == 2 and all(s.shape == (256, 8) for s in seeds)
    trials = 2 + int(np.log(256))
    np.testing.assert_array_equal(seeds[1][:128], kmeans_plusplus(x, 128, seed=6, trials=trials))
    for k in ks:
        shared = kmeans(x, k, n_init=2, seed=5, backend="faiss", seeds=seeds)
        assert len(np.unique(shared.labels)) == k
        alone = kmeans(x, k, n_init=2, seed=5, backend="faiss")
        assert shared.inertia <= alone.inertia * 1.01  # seeds at least as good (more greedy trials)
    starts = [s[:200] for s in seeds]
    assert kmeans(x, 200, n_init=2, seed=5, backend="faiss", seeds=seeds).inertia == pytest.approx(
        min(kmeans(x, 200, init=s, backend="faiss").inertia for s in starts))
    assert sweep_seeds(x, (2, 8, 64), n_init=2, seed=5) is None  # auto: scikit-learn seeds itself below FAISS_MIN_K
    assert sweep_seeds(x, ks, n_init=2, seed=5, backend="sklearn") is None
    with pytest.raises(ConfigError, match="seeds"):
        kmeans(x, 300, n_init=2, seed=5, backend="faiss", seeds=seeds)


def test_kmeans_plusplus_seeds_are_distinct_data_points(blobs):
    x, y = blobs
    seeds = kmeans_plusplus(x, 5, seed=0)
    rows = [int(np.flatnonzero((x == s).all(axis=1))[0]) for s in seeds]
    assert len(set(rows)) == 5
    assert len(set(y[rows])) == 5  # on separated blobs, one seed in each blob
    np.testing.assert_array_equal(seeds, kmeans_plusplus(x, 5, seed=0))


@pytest.mark.parametrize("backend", ["sklearn", "faiss"])
def test_kmeans_warm_start_from_centroids(blobs, backend):
    x, y = blobs
    first = kmeans(x, 5, seed=0, backend=backend)
    again = kmeans(x, 5, seed=1, init=first.centroids, backend=backend)
    assert truth_metrics(again.labels, first.labels)["nmi_truth"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="init centroids"):
        kmeans(x, 4, init=first.centroids, backend=backend)


def test_k_larger_than_segments_is_a_clear_error(blobs):
    x, _ = blobs
    with pytest.raises(ConfigError, match=r"k=500 is larger than the number of segments \(300\)"):
        kmeans(x, 500)
    with pytest.raises(ConfigError, match="k=301"):
        fit_clusters(x, ClusterParams(k=301))


def test_one_segment_is_a_clear_error():
    with pytest.raises(DataError, match="at least 2"):
        fit_clusters(np.ones((1, 3)), ClusterParams(k=1))


@pytest.mark.parametrize("algorithm", ["optics", "hdbscan"])
def test_density_clustering_finds_the_blobs(blobs, algorithm):
    x, y = blobs
    result = fit_clusters(x, ClusterParams(algorithm=algorithm, min_samples=5, min_cluster_size=10))
    assert result.centroids is None and result.inertia is None
    assert result.n_clusters == 5
    assert result.noise_fraction < 0.2
    assert truth_metrics(result.labels, y)["nmi_truth"] > 0.85


@pytest.mark.filterwarnings("ignore:All reachability values are inf")
def test_optics_finding_only_noise_reports_missing_silhouette():
    x = np.random.default_rng(0).uniform(size=(60, 6))
    # no two points within max_eps of each other: nothing is reachable, every point is noise
    params = ClusterParams(algorithm="optics", min_samples=5, optics_max_eps=0.01)
    result = fit_clusters(x, params)
    assert result.n_clusters == 0 and result.noise_fraction == 1.0
    metrics = internal_metrics(x, result.labels)
    assert metrics["silhouette"] is None and metrics["davies_bouldin"] is None
    assert metrics["n_clusters"] == 0 and metrics["noise_fraction"] == 1.0
    # against truth, all-noise is one cluster: no information
    assert truth_metrics(result.labels, np.arange(60) % 3)["nmi_truth"] == pytest.approx(0.0, abs=1e-9)


def test_min_samples_larger_than_segments_is_a_clear_error(blobs):
    x, _ = blobs
    with pytest.raises(ConfigError, match="min_samples=400"):
        fit_clusters(x, ClusterParams(algorithm="hdbscan", min_samples=400))


def test_internal_metrics_exclude_noise_and_sample_with_a_seed(blobs):
    x, y = blobs
    full = internal_metrics(x, y, sample_size=10_000)
    assert full["n_clusters"] == 5 and full["noise_fraction"] == 0.0 and full["silhouette"] > 0.7
    a = internal_metrics(x, y, sample_size=100, seed=3)
    b = internal_metrics(x, y, sample_size=100, seed=3)
    assert a["silhouette"] == b["silhouette"] and abs(a["silhouette"] - full["silhouette"]) < 0.1
    # marking points noise removes them from the silhouette instead of scoring them
    noisy = y.copy()
    noisy[:30] = -1
    metrics = internal_metrics(x, noisy, sample_size=10_000)
    assert metrics["noise_fraction"] == pytest.approx(0.1) and metrics["silhouette"] > 0.7


def test_one_cluster_has_no_silhouette(blobs):
    x, _ = blobs
    metrics = internal_metrics(x, np.zeros(len(x), dtype=int))
    assert metrics["n_clusters"] == 1 and metrics["silhouette"] is None and metrics["calinski_harabasz"] is None


def test_truth_metrics_names_and_values():
    truth = np.array(["a", "a", "b", "b", "c", "c"])
    perfect = truth_metrics(np.array([5, 5, 1, 1, 0, 0]), truth)
    assert set(perfect) == {"nmi_truth", "ari_truth", "v_measure_truth", "homogeneity_truth", "completeness_truth"}
    assert all(v == pytest.approx(1.0) for v in perfect.values())
    # splitting a class keeps homogeneity 1 and lowers completeness
    split = truth_metrics(np.array([0, 1, 2, 2, 3, 3]), truth)
    assert split["homogeneity_truth"] == pytest.approx(1.0) and split["completeness_truth"] < 1.0
    with pytest.raises(DataError, match="5 cluster labels but 6"):
        truth_metrics(np.zeros(5), truth)


def test_stability_is_mean_pairwise_nmi():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert stability([a, a, a]) == pytest.approx(1.0)
    assert stability([a, (a + 1) % 3]) == pytest.approx(1.0)  # renamed clusters are the same clustering
    b = np.array([0, 1, 0, 1, 0, 1])
    assert stability([a, b]) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ConfigError, match="at least 2"):
        stability([a])



def test_an_explicit_thread_cap_bounds_the_free_cores(monkeypatch):
    # study workers that start together all see an idle machine (the load average lags):
    # OMP_NUM_THREADS (set by `nscnet study --threads`) caps what each takes
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert free_cores() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= free_cores() <= (os.cpu_count() or 1)


@pytest.fixture(scope="module")
def nested_blobs():
    """8 blobs in 4 well separated pairs: HDBSCAN's hierarchy holds 4 clusters, then 8."""
    pairs = np.array([[0, 0], [40, 0], [0, 40], [40, 40]], dtype=float)
    centers = np.concatenate([pairs, pairs + [6, 0]])
    x, y = make_blobs(n_samples=800, centers=centers, cluster_std=1.0, random_state=0)
    return x.astype(np.float32), y


@pytest.mark.parametrize("k", [2, 4, 8, 12])
def test_hdbscan_returns_k_clusters_when_k_is_given(nested_blobs, k):
    x, y = nested_blobs
    result = fit_clusters(x, ClusterParams(algorithm="hdbscan", k=k))
    assert result.n_clusters == k and len(np.unique(result.labels[result.labels >= 0])) == k
    assert set(np.unique(result.labels)) <= set(range(-1, k))
    if k == 4:  # the cut follows the hierarchy: each pair of blobs is one cluster
        pairs = y % 4
        assert truth_metrics(result.labels, pairs)["nmi_truth"] > 0.95
    if k == 8:
        assert truth_metrics(result.labels, y)["nmi_truth"] > 0.9


def test_hdbscan_without_k_finds_the_number_itself(nested_blobs):
    x, _ = nested_blobs
    found = fit_clusters(x, ClusterParams(algorithm="hdbscan", min_cluster_size=20)).n_clusters
    assert found in (4, 8)  # excess of mass picks a level of the hierarchy, not a given k


def test_hdbscan_k_larger_than_the_hierarchy_is_a_clear_error():
    x = np.zeros((6, 2), dtype=np.float32)
    x[3:] = 10
    with pytest.raises(DataError, match="k=5"):  # two groups of 3: no more than 2 clusters of 2 or more points
        fit_clusters(x, ClusterParams(algorithm="hdbscan", k=5, min_cluster_size=2, min_samples=2))


@pytest.mark.parametrize("algorithm", ["hdbscan", "optics"])
def test_assign_noise_gives_each_noise_point_its_nearest_clusters_label(blobs, algorithm):
    x, _ = blobs
    rng = np.random.default_rng(0)
    x = np.concatenate([x, rng.uniform(x.min(), x.max(), size=(30, x.shape[1])).astype(np.float32)])
    params = ClusterParams(algorithm=algorithm, min_cluster_size=10, min_samples=5)
    plain = fit_clusters(x, params)
    assigned = fit_clusters(x, ClusterParams(algorithm=algorithm, min_cluster_size=10, min_samples=5, assign_noise=True))
    noise = plain.labels == -1
    assert noise.any() and not (assigned.labels == -1).any() and assigned.noise_fraction == 0
    assert (assigned.labels[~noise] == plain.labels[~noise]).all()  # clustered points keep their label
    clustered = np.flatnonzero(~noise)
    for i in np.flatnonzero(noise):  # each noise point: the label of its nearest clustered point
        nearest = clustered[np.argmin(((x[clustered] - x[i]) ** 2).sum(axis=1))]
        assert assigned.labels[i] == plain.labels[nearest]


def test_silhouette_is_scikit_learns_and_its_sample_estimate_is_not_biased_by_small_clusters():
    from sklearn.metrics import silhouette_score

    from nscnet.clustering.cluster import silhouette

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 16)).astype(np.float32)
    labels = kmeans(x, 300, n_init=1, seed=0).labels  # 4 points a cluster on average, some alone
    full = silhouette_score(x, labels)
    assert silhouette(x, labels, sample_size=5000) == pytest.approx(full, abs=1e-6)  # N <= sample: exact
    estimates = [silhouette(x, labels, sample_size=400, seed=s) for s in range(5)]
    assert abs(np.mean(estimates) - full) < 0.01
    # scikit-learn's own sampling clusters the sample alone and loses cluster mates: biased down
    sampled = [silhouette_score(x, labels, sample_size=400, random_state=s) for s in range(5)]
    assert np.mean(sampled) < full - 0.02
    assert silhouette(x, np.zeros(1200, dtype=int)) is None



def test_silhouettes_of_a_sweep_share_one_distance_pass_and_equal_each_alone():
    from sklearn.metrics import silhouette_score

    from nscnet.clustering.cluster import silhouette, silhouettes

    x = np.random.default_rng(3).normal(size=(900, 8)).astype(np.float32)
    labelings = [kmeans(x, k, n_init=1, seed=0).labels for k in (2, 16, 200)] + [np.zeros(900, dtype=int)]
    together = silhouettes(x, labelings, sample_size=300, seed=4)
    assert together[-1] is None  # one cluster: no silhouette, the others unaffected
    for labels, value in zip(labelings[:-1], together[:-1]):
        assert value == pytest.approx(silhouette(x, labels, sample_size=300, seed=4), abs=1e-12)
    exact = silhouettes(x, labelings[:2], sample_size=5000)
    assert exact == pytest.approx([silhouette_score(x, labels) for labels in labelings[:2]], abs=1e-6)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_lloyd_iterations_from_a_sweeps_seeds_match_across_backends(backend):
    # torch (cache-sized blocks on a CPU) and faiss run the same Lloyd iterations from the same seeds
    pytest.importorskip("faiss")
    x = np.random.default_rng(1).normal(size=(900, 8)).astype(np.float32)
    seeds = sweep_seeds(x, (128, 256), n_init=2, seed=5, backend=backend)
    reference = kmeans(x, 128, n_init=2, seed=5, backend="faiss", seeds=seeds)
    result = kmeans(x, 128, n_init=2, seed=5, backend=backend, seeds=seeds)
    assert result.inertia == pytest.approx(reference.inertia, rel=1e-3)
    assert len(np.unique(result.labels)) == 128 and result.iterations >= 2
