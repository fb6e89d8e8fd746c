"""Clustering (k-means, OPTICS, HDBSCAN) and its metrics, shared by every model.

Pure functions of arrays: no MLflow here. Labels are integer arrays of shape (N,), `-1` marks
noise (OPTICS / HDBSCAN only).

- `kmeans`: k-means++ with scikit-learn, or faiss (random init, much faster at large K);
  `backend="auto"` picks faiss for K >= FAISS_MIN_K, where benchmarks/cluster.py measured it
  faster with the same inertia within 1%.
- `fit_clusters`: dispatches on `params.algorithm` (kmeans | optics | hdbscan).
- `internal_metrics`: silhouette (noise excluded, seeded sample), n_clusters, noise_fraction,
  Davies-Bouldin, Calinski-Harabasz; None (missing, never a made-up number) where undefined.
- `truth_metrics`: NMI, ARI, V-measure, homogeneity, completeness against reference labels,
  over all segments with noise counted as one extra cluster.
- `stability`: mean pairwise NMI of several labelings.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from sklearn import metrics as skm
from sklearn.cluster import HDBSCAN, OPTICS, KMeans

from nscnet.config import ConfigError, DataError

log = logging.getLogger(__name__)

NOISE = -1
# faiss wins from about this K on (benchmarks/cluster.py); below it sklearn's k-means++ is
# quick anyway and its init is the paper's.
FAISS_MIN_K = 32


@dataclass
class KMeansResult:
    labels: np.ndarray      # (N,) int64 in 0..k-1
    centroids: np.ndarray   # (k, D) float32
    inertia: float          # sum of squared distances to the nearest centroid


@dataclass
class ClusterResult:
    labels: np.ndarray              # (N,) int64, -1 = noise
    centroids: np.ndarray | None    # (k, D) for k-means, else None
    inertia: float | None           # k-means only
    n_clusters: int                 # clusters found, noise not counted
    noise_fraction: float           # share of points labelled -1


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _check_k(k: int, n: int) -> None:
    if k < 1:
        raise ConfigError(f"k={k} must be >= 1")
    if k > n:
        raise ConfigError(f"k={k} is larger than the number of segments ({n}): choose k <= {n}")


def _kmeans_sklearn(x: np.ndarray, k: int, n_init: int, seed: int, init: np.ndarray | None) -> KMeansResult:
    if init is not None:
        model = KMeans(n_clusters=k, init=init, n_init=1, random_state=seed)
    else:
        model = KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=seed)
    labels = model.fit_predict(x)
    return KMeansResult(labels.astype(np.int64), model.cluster_centers_.astype(np.float32), float(model.inertia_))


def _kmeans_faiss(x: np.ndarray, k: int, n_init: int, seed: int, init: np.ndarray | None) -> KMeansResult:
    faiss = _faiss()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    # no subsampling (faiss keeps only 256 * k points by default) and no warning for few points
    km = faiss.Kmeans(d, k, niter=25, nredo=1 if init is not None else n_init, seed=seed,
                      min_points_per_centroid=1, max_points_per_centroid=max(n, 256), verbose=False)
    if init is not None:
        km.train(x, init_centroids=np.ascontiguousarray(init, dtype=np.float32))
    else:
        km.train(x)
    distances, labels = km.index.search(x, 1)
    return KMeansResult(labels[:, 0].astype(np.int64), np.array(km.centroids, dtype=np.float32),
                        float(distances[:, 0].astype(np.float64).sum()))


def kmeans(features: np.ndarray, k: int, *, n_init: int = 3, seed: int = 0, init: np.ndarray | None = None,
           backend: str = "auto") -> KMeansResult:
    """k-means of features (N, D) into k clusters.

    init: optional (k, D) warm-start centroids (one run from them instead of n_init restarts).
    backend: "sklearn" (k-means++), "faiss", or "auto" (faiss for k >= FAISS_MIN_K when installed).
    """
    x = np.asarray(features, dtype=np.float32)
    _check_k(k, len(x))
    if init is not None and np.shape(init) != (k, x.shape[1]):
        raise ConfigError(f"init centroids have shape {np.shape(init)}, expected ({k}, {x.shape[1]})")
    if backend == "auto":
        backend = "faiss" if (k >= FAISS_MIN_K and _faiss() is not None) else "sklearn"
    if backend == "faiss":
        if _faiss() is None:
            raise ConfigError("kmeans_backend=faiss but faiss is not installed (pip install faiss-cpu)")
        return _kmeans_faiss(x, k, n_init, seed, init)
    if backend != "sklearn":
        raise ConfigError(f"kmeans_backend={backend!r} is not one of auto, sklearn, faiss")
    return _kmeans_sklearn(x, k, n_init, seed, init)


def _summary(labels: np.ndarray) -> tuple[int, float]:
    clusters = np.unique(labels[labels != NOISE])
    return int(len(clusters)), float(np.mean(labels == NOISE))


def fit_clusters(features: np.ndarray, params: Any, *, k: int | None = None,
                 min_samples: int | None = None, init: np.ndarray | None = None) -> ClusterResult:
    """Cluster features (N, D) with `params.algorithm`; k / min_samples override params.

    params: any config with the fields of `nscnet.config.ClusterParams`.
    """
    x = np.asarray(features, dtype=np.float32)
    n = len(x)
    if n < 2:
        raise DataError(f"clustering needs at least 2 segments, the data has {n}")
    algorithm = params.algorithm
    if algorithm == "kmeans":
        k = params.k if k is None else k
        result = kmeans(x, k, n_init=params.n_init, seed=params.seed, init=init, backend=params.kmeans_backend)
        n_clusters, noise = _summary(result.labels)
        return ClusterResult(result.labels, result.centroids, result.inertia, n_clusters, noise)
    min_samples = params.min_samples if min_samples is None else min_samples
    if min_samples > n:
        raise ConfigError(f"min_samples={min_samples} is larger than the number of segments ({n})")
    if algorithm == "optics":
        max_eps = params.optics_max_eps if params.optics_max_eps > 0 else np.inf
        model = OPTICS(min_samples=max(min_samples, 2), xi=params.optics_xi, max_eps=max_eps,
                       min_cluster_size=min(params.min_cluster_size, n) if params.min_cluster_size > 1 else None)
    elif algorithm == "hdbscan":
        if params.min_cluster_size > n:
            raise ConfigError(f"min_cluster_size={params.min_cluster_size} is larger than the number of segments ({n})")
        model = HDBSCAN(min_cluster_size=max(params.min_cluster_size, 2), min_samples=min_samples, copy=True)
    else:
        raise ConfigError(f"algorithm={algorithm!r} is not one of kmeans, optics, hdbscan")
    labels = model.fit_predict(x).astype(np.int64)
    n_clusters, noise = _summary(labels)
    if n_clusters == 0:
        log.warning("%s with min_samples=%d labelled every segment noise", algorithm, min_samples)
    return ClusterResult(labels, None, None, n_clusters, noise)


def internal_metrics(features: np.ndarray, labels: np.ndarray, *, sample_size: int = 5000,
                     seed: int = 0) -> dict[str, Any]:
    """Label-free quality of a clustering of features (N, D).

    silhouette: noise points excluded; on a seeded sample of `sample_size` points when more
    remain. silhouette, davies_bouldin and calinski_harabasz are None when fewer than 2
    clusters (or every point its own cluster) remain.
    """
    x = np.asarray(features)
    labels = np.asarray(labels)
    n_clusters, noise = _summary(labels)
    out: dict[str, Any] = {"n_clusters": n_clusters, "noise_fraction": noise,
                           "silhouette": None, "davies_bouldin": None, "calinski_harabasz": None}
    keep = labels != NOISE
    x, kept = x[keep], labels[keep]
    if not 2 <= n_clusters <= len(kept) - 1:
        return out
    out["davies_bouldin"] = float(skm.davies_bouldin_score(x, kept))
    out["calinski_harabasz"] = float(skm.calinski_harabasz_score(x, kept))
    if len(kept) > sample_size:
        pick = np.random.default_rng(seed).choice(len(kept), size=sample_size, replace=False)
        x, kept = x[pick], kept[pick]
    if 2 <= len(np.unique(kept)) <= len(kept) - 1:
        out["silhouette"] = float(skm.silhouette_score(x, kept))
    return out


def truth_metrics(labels: np.ndarray, truth: Sequence[Any]) -> dict[str, float]:
    """Agreement of cluster labels (N,) with reference labels (N,), over all segments.

    Noise (-1) is scored as one more cluster, so calling most points noise cannot score well.
    """
    labels = np.asarray(labels)
    truth = np.asarray(truth)
    if len(labels) != len(truth):
        raise DataError(f"{len(labels)} cluster labels but {len(truth)} reference labels")
    homogeneity, completeness, v_measure = skm.homogeneity_completeness_v_measure(truth, labels)
    return {
        "nmi_truth": float(skm.normalized_mutual_info_score(truth, labels)),
        "ari_truth": float(skm.adjusted_rand_score(truth, labels)),
        "v_measure_truth": float(v_measure),
        "homogeneity_truth": float(homogeneity),
        "completeness_truth": float(completeness),
    }


def stability(labelings: Sequence[np.ndarray]) -> float:
    """Mean pairwise NMI of two or more labelings of the same N points (1.0: all identical)."""
    if len(labelings) < 2:
        raise ConfigError(f"stability needs at least 2 labelings, got {len(labelings)}")
    scores = [skm.normalized_mutual_info_score(a, b) for a, b in itertools.combinations(labelings, 2)]
    return float(np.mean(scores))
