"""Clustering (k-means, OPTICS, HDBSCAN) and its metrics, shared by every model.

Pure functions of arrays: no MLflow here. Labels are integer arrays of shape (N,), `-1` marks
noise (OPTICS / HDBSCAN only).

- `kmeans`: k-means++ with scikit-learn, or greedy k-means++ seeds (`kmeans_plusplus_restarts`)
  + Lloyd iterations in torch (`nscnet.clustering.kmeans_torch`, CPU or GPU) or faiss (much
  faster than scikit-learn at large K, same inertia within 1%); `backend="auto"` picks torch on
  a GPU, faiss for K >= FAISS_MIN_K on a CPU. All run on the cores that are actually free.
- `fit_clusters`: dispatches on `params.algorithm` (kmeans | optics | hdbscan). HDBSCAN with
  `k` given (> 0) returns exactly k clusters: its condensed tree cut horizontally to k
  (`hdbscan_cut`); with k = 0 it finds the number itself (excess of mass). `assign_noise`
  gives every noise point the cluster of its nearest clustered point (`assign_noise`).
- `internal_metrics`: silhouette (noise excluded, seeded sample), n_clusters, noise_fraction,
  Davies-Bouldin, Calinski-Harabasz; None (missing, never a made-up number) where undefined.
  `silhouettes`: the silhouettes of several labelings of the same points (a K sweep) from one
  pass over the sampled distances.
- `truth_metrics`: NMI, ARI, V-measure, homogeneity, completeness against reference labels,
  over all segments with noise counted as one extra cluster.
- `stability`: mean pairwise NMI of several labelings.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import scipy.sparse
from sklearn import metrics as skm
from sklearn.cluster import HDBSCAN, OPTICS, KMeans
from threadpoolctl import ThreadpoolController

from nscnet.config import ConfigError, DataError

log = logging.getLogger(__name__)

NOISE = -1
# faiss wins from about this K on (benchmarks/cluster.py, 7,652 x 128, n_init 3: K=64 sklearn
# 0.6 s, faiss 1.1 s; K=128 1.9 s vs 1.3 s; K=2048 28.6 s vs 16.0 s; inertia within 0.1%).
FAISS_MIN_K = 128
LLOYD_ITERATIONS = 50  # Lloyd iterations; k-means on these features converges well before
# k-means++ seeding reads its candidates' rows of the Gram matrix when it takes at most this
# (float32 N x N: N up to 11,585), else makes them with a product per step (`kmeans_plusplus_restarts`)
GRAM_MAX_BYTES = 1 << 29


@dataclass
class KMeansResult:
    labels: np.ndarray      # (N,) int64 in 0..k-1
    centroids: np.ndarray   # (k, D) float32
    inertia: float          # sum of squared distances to the nearest centroid
    iterations: int = 0     # Lloyd iterations run, all restarts together (faiss; 0 = not counted)


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


def kmeans_plusplus(x: np.ndarray, k: int, *, seed: int = 0, trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ seeding (as scikit-learn's): (N, D) -> (k, D) initial centroids.

    Each new centroid is the best of `trials` (default 2 + log k) candidates drawn with
    probability proportional to the squared distance to the nearest centroid so far. Written
    here because scikit-learn's own `kmeans_plusplus` took minutes at K = 2048 on a busy
    2-core machine; the (N, trials) products run on the free cores (idle 2-core machine,
    K = 2048, 3 restarts: 3.7 s on 2 BLAS threads, 5.3 s on 1).
    """
    return kmeans_plusplus_restarts(x, k, seeds=(seed,), trials=trials)[0]


@contextlib.contextmanager
def _small_pages():
    """Arrays allocated inside are not advised to the kernel as transparent huge pages (numpy does
    so for every large array). On a host whose memory is fragmented the kernel compacts memory to
    find huge pages at first touch: filling a fresh 234 MB array took 2.8-2.9 s there, against
    0.10-0.13 s in 4 KB pages (docs/clustering.md). No effect where numpy lacks the switch."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # numpy < 2
        yield
        return
    kept = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(kept)


def kmeans_plusplus_restarts(x: np.ndarray, k: int, *, seeds: Sequence[int], trials: int | None = None,
                             gram_max_bytes: int | None = None) -> list[np.ndarray]:
    """`kmeans_plusplus(x, k, seed=s)` for every s of `seeds`, the restarts seeded together.

    Each restart draws from its own generator exactly as alone. The candidates are data points,
    so their squared distances to all points are rows of the (N, N) matrix |x|^2 + |y|^2 - 2 x.y:
    up to `gram_max_bytes` (GRAM_MAX_BYTES: N up to 11,585), and where the seeding reads at least
    N / 4 candidates in all (a K sweep's seeding at 2,048: 2,047 steps of 3 x 9), it is made once
    (one (N, D) x (D, N) product at the sgemm rate) and each step only reads its candidates' rows,
    about 1/5 of the memory a product per step reads at D = 128 (7,652 x 128, K = 2,048, 3
    restarts: 0.7 s against 2.0 s, 2 threads). Otherwise each step makes the distances
    to all restarts' candidates with one product of the lifted matrices [x, |x|^2, 1] .
    [-2c, 1, |c|^2] (memory-bound: the (N, D) data against a few columns). Both give the same
    distances up to float32 round-off (tests/clustering/test_cluster.py).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, dim = x.shape
    trials = trials or 2 + int(np.log(k))
    rngs = [np.random.default_rng(seed) for seed in seeds]
    r = len(rngs)
    squares = np.einsum("ij,ij->i", x, x)
    budget = GRAM_MAX_BYTES if gram_max_bytes is None else gram_max_bytes
    centers = np.empty((r, k, dim), dtype=np.float32)
    nearest = np.empty((r, n), dtype=np.float32)  # squared distance to the nearest centroid so far
    for i, rng in enumerate(rngs):
        first = int(rng.integers(n))
        centers[i, 0] = x[first]
        nearest[i] = np.maximum(squares - 2 * x @ x[first] + squares[first], 0)
    chosen = np.empty(r * trials, dtype=np.int64)
    with _controller().limit(limits=free_cores(), user_api="blas"):
        if k > 1 and n * n * 4 <= budget and 4 * (k - 1) * r * trials >= n:
            with _small_pages():  # one first touch of N^2 floats: no huge-page compaction stalls
                gram = np.empty((n, n), dtype=np.float32)  # the squared distances between all points
            for first in range(0, n, 512):  # in blocks of rows that stay in cache
                block = gram[first:first + 512]
                np.matmul(x[first:first + 512], x.T, out=block)
                block *= -2
                block += squares[first:first + 512, None]
                block += squares[None, :]
                np.maximum(block, 0, out=block)
        else:
            gram = None
            left = np.vstack([-2 * x.T, np.ones((1, n), dtype=np.float32), squares[None, :]])  # (D + 2, N)
            right = np.empty((r * trials, dim + 2), dtype=np.float32)
            right[:, -1] = 1
        for c in range(1, k):
            for i, rng in enumerate(rngs):
                cumulative = np.cumsum(nearest[i], dtype=np.float64)
                if cumulative[-1] <= 0:  # every point is already a centroid
                    candidates = rng.integers(n, size=trials)
                else:
                    candidates = np.searchsorted(cumulative, rng.uniform(size=trials) * cumulative[-1]).clip(max=n - 1)
                chosen[i * trials:(i + 1) * trials] = candidates
            if gram is not None:
                distances = gram[chosen]  # (r * trials, N) squared distances of the candidates
            else:
                right[:, :dim] = x[chosen]
                right[:, dim] = squares[chosen]
                distances = right @ left
                np.maximum(distances, 0, out=distances)
            distances = distances.reshape(r, trials, n)
            np.minimum(distances, nearest[:, None, :], out=distances)
            best = np.argmin(distances.sum(axis=2), axis=1)  # (r,)
            for i in range(r):
                centers[i, c] = x[chosen[i * trials + best[i]]]
                nearest[i] = distances[i, best[i]]
    return list(centers)


def restart_seeds(seed: int, n_init: int) -> list[int]:
    """The generator seed of each k-means restart."""
    return [seed + restart for restart in range(n_init)]


def sweep_seeds(features: np.ndarray, ks: Sequence[int], *, n_init: int, seed: int,
                backend: str = "auto") -> list[np.ndarray] | None:
    """k-means++ seeds of a K sweep, one (max K, D) array per restart, or None where no K of the
    sweep would use them (scikit-learn seeds itself; `backend` as `kmeans`).

    k-means++ is sequential: its first k centroids are the k-means++ seeds of k. So a sweep
    seeds once, at its largest K, and every K starts from the first K rows (`kmeans(seeds=)`),
    instead of seeding each K from scratch (benchmarks/basenet.py: a sweep 64..2048 did 4,032
    seeding steps a restart, now 2,048). The greedy trials are those of the largest K
    (2 + log K), so a K of the sweep starts from slightly better seeds than a run at that K
    alone would (the same inertia within 0.2% after Lloyd, docs/clustering.md).
    """
    if backend not in ("auto", "faiss", "torch") or (backend != "torch" and _faiss() is None):
        return None
    top = max(ks)
    if backend == "auto" and top < FAISS_MIN_K:
        return None
    x = np.asarray(features, dtype=np.float32)
    _check_k(top, len(x))
    return kmeans_plusplus_restarts(x, top, seeds=restart_seeds(seed, n_init))


def _kmeans_faiss(x: np.ndarray, k: int, n_init: int, seed: int, init: np.ndarray | None,
                  seeds: Sequence[np.ndarray] | None = None) -> KMeansResult:
    """Lloyd iterations in faiss from k-means++ seeds (or `init`); the best of n_init restarts."""
    faiss = _faiss()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    best: KMeansResult | None = None
    iterations = 0
    if init is not None:
        starts = [np.ascontiguousarray(init, dtype=np.float32)]
    elif seeds is not None:
        starts = [np.ascontiguousarray(start[:k], dtype=np.float32) for start in seeds]
    else:
        starts = kmeans_plusplus_restarts(x, k, seeds=restart_seeds(seed, n_init))
    for restart, start in enumerate(starts):
        # no subsampling (faiss keeps only 256 * k points by default), no warning for few points
        km = faiss.Kmeans(d, k, niter=LLOYD_ITERATIONS, seed=seed + restart, min_points_per_centroid=1,
                          max_points_per_centroid=max(n, 256), verbose=False)
        km.train(x, init_centroids=start)
        iterations += len(km.iteration_stats)  # faiss stops once the assignment no longer changes
        distances, labels = km.index.search(x, 1)
        inertia = float(distances[:, 0].astype(np.float64).sum())
        if best is None or inertia < best.inertia:
            best = KMeansResult(labels[:, 0].astype(np.int64), np.array(km.centroids, dtype=np.float32), inertia)
    best.iterations = iterations
    return best


def free_cores() -> int:
    """CPU cores not busy with other processes (1 at least), and never more than an explicit
    `OMP_NUM_THREADS`: OpenMP threads beyond the free cores spin and wait; on a loaded 2-core
    machine faiss k-means ran 6x faster on 1 thread than on 2. The load average lags by about a
    minute, so processes that start together (study workers) must be capped explicitly."""
    cores = os.cpu_count() or 1
    cap = os.environ.get("OMP_NUM_THREADS", "").strip()
    if cap.isdigit() and int(cap) > 0:
        cores = min(cores, int(cap))
    try:
        busy = os.getloadavg()[0] - 1  # this process is part of the load
    except OSError:
        return cores
    return max(1, min(cores, int(round((os.cpu_count() or 1) - max(busy, 0)))))


@functools.lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    """One scan of the loaded BLAS/OpenMP libraries per process (a scan costs about 4 ms, and a
    study trial limits threads a dozen times); made after faiss is imported."""
    _faiss()
    return ThreadpoolController()


@contextlib.contextmanager
def _threads(n: int):
    faiss = _faiss()
    before = faiss.omp_get_max_threads() if faiss is not None else None
    with _controller().limit(limits=n):
        if faiss is not None:
            faiss.omp_set_num_threads(n)
        try:
            yield
        finally:
            if faiss is not None:
                faiss.omp_set_num_threads(before)


def kmeans(features: np.ndarray, k: int, *, n_init: int = 3, seed: int = 0, init: np.ndarray | None = None,
           backend: str = "auto", device: Any = None, seeds: Sequence[np.ndarray] | None = None) -> KMeansResult:
    """k-means of features (N, D) into k clusters.

    init: optional (k, D) warm-start centroids (one run from them instead of n_init restarts).
    seeds: k-means++ seeds of a larger K, one array per restart (`sweep_seeds`); the faiss
    backend starts each restart from their first k rows instead of seeding k itself.
    backend: "sklearn" (k-means++), "faiss" (greedy k-means++ seeds, faiss' Lloyd iterations),
    "torch" (the same seeds, Lloyd iterations of `nscnet.clustering.kmeans_torch` on `device`,
    default CPU) or "auto" (torch on a CUDA `device`; on a CPU faiss for k >= FAISS_MIN_K when
    installed, else sklearn). On a CPU, alone, torch's Lloyd iterations were faster than faiss'
    (K sweep 64..2048 on 7,652 x 128, same seeds and inertia: 1.16 s against 1.60 s), but a whole
    sweep run was slower with them (6.2 s against 5.3 s, benchmarks/basenet.py --backend torch)
    and importing torch costs about 1.3 s a process, so auto keeps faiss there (docs/clustering.md).
    """
    x = np.asarray(features, dtype=np.float32)
    _check_k(k, len(x))
    if init is not None and np.shape(init) != (k, x.shape[1]):
        raise ConfigError(f"init centroids have shape {np.shape(init)}, expected ({k}, {x.shape[1]})")
    on_gpu = device is not None and str(device).startswith("cuda")
    if backend == "auto":
        if on_gpu:
            backend = "torch"
        else:
            backend = "faiss" if (k >= FAISS_MIN_K and _faiss() is not None) else "sklearn"
    if backend == "faiss" and _faiss() is None:
        raise ConfigError("kmeans_backend=faiss but faiss is not installed (pip install faiss-cpu)")
    if backend not in ("sklearn", "faiss", "torch"):
        raise ConfigError(f"kmeans_backend={backend!r} is not one of auto, sklearn, faiss, torch")
    if seeds is not None and (len(seeds) != n_init or any(len(s) < k for s in seeds)):
        raise ConfigError(f"seeds: {len(seeds)} arrays for n_init={n_init}, each needs >= {k} rows")
    if backend == "torch":
        return _kmeans_torch(x, k, n_init, seed, init, seeds, device)
    with _threads(free_cores()):
        if backend == "faiss":
            return _kmeans_faiss(x, k, n_init, seed, init, seeds)
        return _kmeans_sklearn(x, k, n_init, seed, init)


def _kmeans_torch(x: np.ndarray, k: int, n_init: int, seed: int, init: np.ndarray | None,
                  seeds: Sequence[np.ndarray] | None, device: Any) -> KMeansResult:
    """Lloyd iterations of `nscnet.clustering.kmeans_torch` from the k-means++ seeds of this module
    (or `init`, or a sweep's `seeds`); on a CPU on the free cores."""
    import torch

    from nscnet.clustering.kmeans_torch import kmeans_torch

    on_gpu = device is not None and str(device).startswith("cuda")
    cores = free_cores()
    kept = torch.get_num_threads()
    with _threads(cores):
        torch.set_num_threads(cores)
        try:
            starts = seeds
            if init is None and seeds is None and not on_gpu:  # on a GPU, kmeans_torch seeds there
                starts = kmeans_plusplus_restarts(x, k, seeds=restart_seeds(seed, n_init))
            return kmeans_torch(x, k, n_init=n_init, seed=seed, init=init, device=device or "cpu", starts=starts)
        finally:
            torch.set_num_threads(kept)


def _summary(labels: np.ndarray) -> tuple[int, float]:
    clusters = np.unique(labels[labels != NOISE])
    return int(len(clusters)), float(np.mean(labels == NOISE))


def fit_clusters(features: np.ndarray, params: Any, *, k: int | None = None,
                 min_samples: int | None = None, init: np.ndarray | None = None, device: Any = None,
                 seeds: Sequence[np.ndarray] | None = None) -> ClusterResult:
    """Cluster features (N, D) with `params.algorithm`; k / min_samples override params.

    params: any config with the fields of `nscnet.config.ClusterParams`. device: a torch device
    for k-means (`kmeans`: on CUDA with kmeans_backend=auto, k-means runs on the GPU). seeds: a
    K sweep's shared k-means++ seeds (`sweep_seeds`).
    """
    x = np.asarray(features, dtype=np.float32)
    n = len(x)
    if n < 2:
        raise DataError(f"clustering needs at least 2 segments, the data has {n}")
    from nscnet.defaults import resolve

    params = resolve(params, n)[0]  # auto (0) k, min_samples, min_cluster_size: from N (the runners log them)
    algorithm = params.algorithm
    if algorithm == "kmeans":
        k = params.k if k is None else k
        result = kmeans(x, k, n_init=params.n_init, seed=params.seed, init=init, backend=params.kmeans_backend,
                        device=device, seeds=seeds)
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
    k = params.k if k is None else k
    if algorithm == "hdbscan" and k:  # k given: HDBSCAN's own tree cut to k clusters
        _check_k(k, n)
        labels = hdbscan_cut(model._single_linkage_tree_, n, k, max(params.min_cluster_size, 2))
        labels = split_to_k(x, labels, k, seed=params.seed)  # a hierarchy with fewer than k clusters
    if getattr(params, "assign_noise", False):
        labels = assign_noise(x, labels)
    n_clusters, noise = _summary(labels)
    warning = noise_warning(algorithm, n_clusters, noise, min_cluster_size=params.min_cluster_size,
                            min_samples=min_samples)
    if warning:
        log.warning(warning)
    return ClusterResult(labels, None, None, n_clusters, noise)


def _condensed(single_linkage_tree: np.ndarray, min_cluster_size: int) -> np.ndarray:
    """HDBSCAN's condensed tree (rows parent, child, value = lambda, cluster_size; the root is N) from
    scikit-learn's single-linkage tree, by scikit-learn's own `_condense_tree` (private in
    scikit-learn 1.9, the one HDBSCAN.fit calls; scikit-learn has no public condensed tree)."""
    from sklearn.cluster._hdbscan._tree import _condense_tree

    return _condense_tree(single_linkage_tree, min_cluster_size)


def _tree_cut(condensed: np.ndarray, n: int, k: int) -> tuple[list[int], dict[int, list[int]]]:
    """The k (or, when the tree has fewer, all) clusters of a horizontal cut of a condensed
    tree: from the root, split the cluster whose children appear first (smallest lambda, the
    largest distance) until k clusters remain. Returns (frontier clusters, children of each)."""
    import heapq

    rows = condensed[condensed["cluster_size"] > 1] if len(condensed) else condensed
    rows = rows[rows["child"] >= n]
    children: dict[int, list[int]] = {}
    split_at: dict[int, float] = {}
    for row in rows:
        parent = int(row["parent"])
        children.setdefault(parent, []).append(int(row["child"]))
        split_at[parent] = min(split_at.get(parent, np.inf), float(row["value"]))
    frontier = {n}
    heap = [(split_at[n], n)] if n in split_at else []
    while heap and len(frontier) < k:
        _, node = heapq.heappop(heap)
        frontier.discard(node)
        for child in children[node]:
            frontier.add(child)
            if child in split_at:
                heapq.heappush(heap, (split_at[child], child))
    return sorted(frontier), children


def hdbscan_cut(single_linkage_tree: np.ndarray, n: int, k: int, min_cluster_size: int) -> np.ndarray:
    """Labels (N,) of exactly k clusters (noise -1) from HDBSCAN's hierarchy: its condensed tree
    at `min_cluster_size` cut horizontally to k clusters (`_tree_cut`). A point belongs to the
    cut cluster it stays in (or falls out of) below the cut; a point that falls out of the tree
    above the cut is noise. When the condensed tree has fewer than k clusters, min_cluster_size
    is halved (down to 2) until it has them (still fewer: `split_to_k` splits the largest); when
    a split gives more than k, the smallest cluster joins the largest until k remain.
    """
    size = max(2, int(min_cluster_size))
    while True:
        condensed = _condensed(single_linkage_tree, size)
        frontier, children = _tree_cut(condensed, n, k)
        if len(frontier) >= k or size == 2:
            break
        size = max(2, size // 2)
    owner: dict[int, int] = {}  # cluster node -> index of the frontier cluster below which it lies
    stack = [(node, i) for i, node in enumerate(frontier)]
    while stack:
        node, label = stack.pop()
        owner[node] = label
        stack.extend((child, label) for child in children.get(node, []))
    labels = np.full(n, NOISE, dtype=np.int64)
    points = condensed[condensed["child"] < n]
    for row in points:
        label = owner.get(int(row["parent"]))
        if label is not None:
            labels[int(row["child"])] = label
    # a frontier cluster whose every point lies in its subclusters still owns them (handled above);
    # more than k (a split into 3+ children): the smallest join the largest cluster they touch first
    while len(np.unique(labels[labels != NOISE])) > k:
        counts = np.bincount(labels[labels != NOISE])
        present = np.flatnonzero(counts)
        smallest = present[np.argmin(counts[present])]
        others = present[present != smallest]
        labels[labels == smallest] = others[np.argmax(counts[others])]
    _, labels[labels != NOISE] = np.unique(labels[labels != NOISE], return_inverse=True)
    return labels


def split_to_k(features: np.ndarray, labels: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Labels with k clusters: while fewer, the largest cluster is split in two by 2-means
    (for a hierarchy that holds fewer than k clusters of 2 or more points). DataError when the
    largest cluster cannot be split (identical points)."""
    labels = np.asarray(labels).copy()
    x = np.asarray(features, dtype=np.float32)
    if (labels == NOISE).all():  # nothing clustered: start from one cluster of everything
        labels[:] = 0
    while len(np.unique(labels[labels != NOISE])) < k:
        counts = np.bincount(labels[labels != NOISE])
        largest = int(np.argmax(counts))
        members = np.flatnonzero(labels == largest)
        halves = KMeans(n_clusters=2, n_init=1, random_state=seed).fit_predict(x[members]) \
            if len(members) >= 2 and len(np.unique(x[members], axis=0)) >= 2 else None
        if halves is None or halves.min() == halves.max():
            raise DataError(f"k={k}: these {len(x)} segments hold only {len(counts[counts > 0])} separable "
                            "clusters; choose a smaller k")
        labels[members[halves == 1]] = len(counts)
    return labels


def assign_noise(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Labels (N,) with every noise point (-1) given the label of its nearest clustered point
    (Euclidean, in the space that was clustered); unchanged when nothing or everything is noise."""
    labels = np.asarray(labels).copy()
    noise = labels == NOISE
    if not noise.any() or noise.all():
        return labels
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(features, dtype=np.float32)
    nearest = NearestNeighbors(n_neighbors=1).fit(x[~noise]).kneighbors(x[noise], return_distance=False)[:, 0]
    labels[noise] = labels[~noise][nearest]
    return labels


NOISE_WARN_SHARE = 0.5  # a density clustering calling more than this share noise is warned about


def noise_warning(algorithm: str, n_clusters: int, noise: float, *, min_cluster_size: int,
                  min_samples: int) -> str | None:
    """The loud warning, with a suggestion, for a density clustering that is all (or mostly) noise."""
    if n_clusters == 0:
        head = f"ALL SEGMENTS ARE NOISE: {algorithm} found no cluster"
    elif noise > NOISE_WARN_SHARE:
        head = f"{noise:.0%} of the segments are noise: {algorithm} found {n_clusters} cluster(s)"
    else:
        return None
    return (f"{head} (min_cluster_size={min_cluster_size}, min_samples={min_samples}); try smaller values "
            "(0 = auto from N), or algorithm=kmeans with k set")


def internal_metrics(features: np.ndarray, labels: np.ndarray, *, sample_size: int = 5000,
                     seed: int = 0, silhouette_value: Any = "compute") -> dict[str, Any]:
    """Label-free quality of a clustering of features (N, D).

    silhouette: noise points excluded; on a seeded sample of `sample_size` points when more
    remain; `silhouette_value`, when given, is this clustering's silhouette already measured
    (`silhouettes`, as a K sweep does for all its K at once). silhouette, davies_bouldin and
    calinski_harabasz are None when fewer than 2 clusters (or every point its own cluster) remain.
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
    geometry = _geometry(np.asarray(x, dtype=np.float64), kept)  # centroids once for both scores
    out["davies_bouldin"] = davies_bouldin(x, kept, geometry=geometry)
    out["calinski_harabasz"] = calinski_harabasz(x, kept, geometry=geometry)
    out["silhouette"] = (silhouette(x, kept, sample_size=sample_size, seed=seed)
                         if isinstance(silhouette_value, str) else silhouette_value)
    return out


def silhouette(x: np.ndarray, labels: np.ndarray, *, sample_size: int = 5000, seed: int = 0) -> float | None:
    """Mean silhouette of features (N, D) with labels (N,) (no noise), None with fewer than 2
    clusters or every point its own cluster.

    Up to `sample_size` points it is scikit-learn's `silhouette_score`. Beyond, it is the mean
    over a seeded sample of `sample_size` points of each one's silhouette measured against all
    N points: an unbiased estimate of the mean over all points, at sample_size x N distances
    instead of N^2. scikit-learn's `silhouette_score(sample_size=)` instead clusters the sample
    alone, which drops cluster mates and biases the score down where clusters are small: on
    the 7,652 syllables at K = 2,048 its 5,000 sample gave 0.0142 against 0.0299 for all points,
    which favours small K in a sweep (benchmarks/basenet.py --silhouette-samples, docs/clustering.md).
    """
    return silhouettes(x, [labels], sample_size=sample_size, seed=seed)[0]


def silhouettes(x: np.ndarray, labelings: Sequence[np.ndarray], *, sample_size: int = 5000,
                seed: int = 0) -> list[float | None]:
    """`silhouette(x, labels)` of each labeling of the same points (no noise), the sampled points'
    distances to all points made once for all of them (a K sweep: one (sample, N) distance matrix,
    not one per K; each labeling then costs one sparse product of the distances with its
    (K, N) membership matrix: 6 K of a sweep 64..2048 on 7,652 x 128 in 0.69 s, was 1.84 s).
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    out: list[float | None] = [None] * len(labelings)
    groups = []  # (index, codes, counts, membership) of each labeling with a silhouette
    for i, labels in enumerate(labelings):
        _, codes = np.unique(np.asarray(labels), return_inverse=True)
        k = int(codes.max()) + 1 if len(codes) else 0
        if 2 <= k <= n - 1:
            groups.append((i, codes, np.bincount(codes, minlength=k), _membership(codes, k)))
    if not groups:
        return out
    squares = np.einsum("ij,ij->i", x, x)
    rows = np.arange(n) if n <= sample_size else np.sort(
        np.random.default_rng(seed).choice(n, size=sample_size, replace=False))
    totals = np.zeros(len(groups))
    # rows per chunk: a (step, N) float64 block of about 8 MB, which the passes below (sqrt, the
    # sparse products) read while it is still in cache: 20-30% faster on 7,652 points than 32 MB blocks
    step = max(1, (1 << 20) // n)
    for first in range(0, len(rows), step):
        chunk = rows[first:first + step]
        q = x[chunk]
        distances = np.einsum("ij,ij->i", q, q)[:, None] + squares[None, :] - 2 * q @ x.T
        np.sqrt(np.maximum(distances, 0, out=distances), out=distances)
        index = np.arange(len(chunk))
        for j, (_, codes, counts, membership) in enumerate(groups):
            sums = (membership @ distances.T).T  # (chunk, K): distance to each cluster
            own = codes[chunk]
            mates = counts[own] - 1
            a = sums[index, own] / np.maximum(mates, 1)
            sums /= counts
            sums[index, own] = np.inf
            b = sums.min(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                values = np.nan_to_num((b - a) / np.maximum(a, b))
            values[mates == 0] = 0.0  # a point alone in its cluster scores 0 (Rousseeuw; scikit-learn)
            totals[j] += float(values.sum())
    for j, (i, *_) in enumerate(groups):
        out[i] = float(totals[j] / len(rows))
    return out


def _membership(codes: np.ndarray, k: int) -> scipy.sparse.csr_matrix:
    """(k, N) sparse 0/1 matrix: row c marks the points of cluster c (codes (N,) in 0..k-1), so that
    `membership @ values` sums any per-point values per cluster."""
    n = len(codes)
    return scipy.sparse.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(k, n))


def _geometry(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(codes (N,), counts (K,), centroids (K, D), distance of each point to its centroid (N,)) in
    float64; the per-cluster sums as one sparse (K, N) membership product (np.add.at: 3x slower)."""
    _, codes = np.unique(labels, return_inverse=True)
    k = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    centroids = np.asarray(_membership(codes, k) @ x) / counts[:, None]
    return codes, counts, centroids, np.linalg.norm(x - centroids[codes], axis=1)


def davies_bouldin(x: np.ndarray, labels: np.ndarray, *, geometry: tuple | None = None) -> float:
    """scikit-learn's `davies_bouldin_score` of features (N, D) and labels (N,) (2 or more
    clusters), computed with one (K, K) centroid-distance matrix instead of one
    `pairwise_distances` call per cluster: 7.3 s of a K sweep to 2,048 in scikit-learn.
    geometry: `_geometry(x, labels)` when already made (`internal_metrics` shares it)."""
    codes, counts, centroids, own = geometry or _geometry(np.asarray(x, dtype=np.float64), labels)
    spread = np.bincount(codes, weights=own, minlength=len(counts)) / counts
    squares = np.einsum("ij,ij->i", centroids, centroids)
    between = np.sqrt(np.maximum(squares[:, None] + squares[None, :] - 2 * centroids @ centroids.T, 0))
    np.fill_diagonal(between, 0.0)
    if np.allclose(spread, 0) or np.allclose(between, 0):
        return 0.0
    between[between == 0] = np.inf  # as scikit-learn: coincident centroids add nothing
    return float(np.mean(np.max((spread[:, None] + spread[None, :]) / between, axis=1)))


def calinski_harabasz(x: np.ndarray, labels: np.ndarray, *, geometry: tuple | None = None) -> float:
    """scikit-learn's `calinski_harabasz_score` of features (N, D) and labels (N,) (2 or more
    clusters, fewer than N), vectorized (scikit-learn loops over the clusters in Python).
    geometry: as `davies_bouldin`."""
    x = np.asarray(x, dtype=np.float64)
    _, counts, centroids, own = geometry or _geometry(x, labels)
    n, k = len(x), len(counts)
    within = float(np.sum(own ** 2))
    between = float(np.sum(counts * np.sum((centroids - x.mean(axis=0)) ** 2, axis=1)))
    return 1.0 if within == 0 else between * (n - k) / (within * (k - 1))


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


def label_centroids(processed: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(k, d) float32 mean of processed (N, d) per label 0..k-1; an empty label gets a random point."""
    x = np.asarray(processed, dtype=np.float32)
    centroids = np.zeros((k, x.shape[1]), dtype=np.float32)
    counts = np.bincount(labels, minlength=k)[:k]
    np.add.at(centroids, labels, x)
    filled = counts > 0
    centroids[filled] /= counts[filled, None]
    if (~filled).any():
        pick = np.random.default_rng(0).choice(len(x), size=int((~filled).sum()), replace=False)
        centroids[~filled] = x[pick]
    return centroids
