"""The torch k-means (NSCNet's per-epoch clustering on a GPU), run here on CPU tensors: the
same inertia as the CPU path within 1%, warm starts, seeds, and the dispatch from `kmeans`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

from nscnet.clustering.cluster import fit_clusters, kmeans, kmeans_plusplus_restarts, truth_metrics
from nscnet.clustering.kmeans_torch import kmeans_torch
from nscnet.config import ClusterParams, ConfigError


def test_recovers_separated_blobs_and_reports_true_inertia():
    x, y = make_blobs(n_samples=300, centers=5, n_features=8, cluster_std=0.5, random_state=1)
    x = x.astype(np.float32)
    result = kmeans_torch(x, 5, n_init=3, seed=0, device="cpu")
    assert result.labels.shape == (300,) and result.centroids.shape == (5, 8)
    assert truth_metrics(result.labels, y)["nmi_truth"] > 0.99
    expected = ((x - result.centroids[result.labels]) ** 2).sum()
    assert result.inertia == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("structured", [True, False])
def test_inertia_within_one_percent_of_sklearn_and_faiss(structured):
    if structured:
        x, _ = make_blobs(n_samples=3000, centers=80, n_features=16, cluster_std=1.0, random_state=2)
    else:
        x = np.random.default_rng(2).normal(size=(3000, 16))
    x = x.astype(np.float32)
    ours = kmeans_torch(torch.from_numpy(x), 128, n_init=2, seed=0)
    for backend in ("sklearn", "faiss"):
        theirs = kmeans(x, 128, n_init=2, seed=0, backend=backend)
        assert ours.inertia <= theirs.inertia * 1.01, backend
    assert len(np.unique(ours.labels)) == 128  # no empty cluster left


def test_same_seed_same_result_and_warm_start():
    x = np.random.default_rng(3).normal(size=(500, 6)).astype(np.float32)
    a, b = kmeans_torch(x, 10, seed=4), kmeans_torch(x, 10, seed=4)
    assert np.array_equal(a.labels, b.labels)
    warm = kmeans_torch(x, 10, init=a.centroids)  # from converged centroids: already converged
    assert warm.inertia == pytest.approx(a.inertia, rel=1e-4)
    with pytest.raises(ConfigError, match="init centroids"):
        kmeans_torch(x, 10, init=a.centroids[:5])
    with pytest.raises(ConfigError, match="k=501"):
        kmeans_torch(x, 501)


def test_kmeans_and_fit_clusters_dispatch_to_torch():
    x = np.random.default_rng(5).normal(size=(400, 4)).astype(np.float32)
    # on a CPU the torch backend starts from the numpy k-means++ seeds (faster there than seeding in torch)
    starts = kmeans_plusplus_restarts(x, 7, seeds=(1, 2))
    direct = kmeans_torch(x, 7, n_init=2, seed=1, device="cpu", starts=starts)
    via = kmeans(x, 7, n_init=2, seed=1, backend="torch")
    assert np.array_equal(direct.labels, via.labels)
    assert via.iterations >= 2  # assignment passes counted, every restart together
    # a CPU device keeps the CPU backends (auto: sklearn below FAISS_MIN_K)
    cpu = fit_clusters(x, ClusterParams(algorithm="kmeans", k=7, n_init=2, seed=1), device=torch.device("cpu"))
    assert cpu.inertia == pytest.approx(kmeans(x, 7, n_init=2, seed=1, backend="sklearn").inertia)
