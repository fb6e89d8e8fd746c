"""k-means in torch: the per-epoch clustering of NSCNet on the GPU (runs on CPU tensors too).

The same algorithm as `nscnet.clustering.cluster.kmeans` with faiss: greedy k-means++ seeds (the best of
2 + log k candidates per centroid, as scikit-learn's), then Lloyd iterations until no label
changes or `iterations` are done; the best of `n_init` restarts by inertia. Distances come from
one matrix product per chunk of rows (||x||^2 - 2 x.c + ||c||^2), so memory stays at
chunk x k floats. An empty cluster takes the point farthest from its centroid (as
scikit-learn relocates empty clusters). Inertia within 1% of the CPU path:
tests/clustering/test_kmeans_torch.py.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    >>> result = kmeans_torch(x, 3, n_init=2, device="cpu")
    >>> result.labels.shape, result.centroids.shape
    ((200,), (3, 4))
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from nscnet.clustering.cluster import LLOYD_ITERATIONS, KMeansResult
from nscnet.config import ConfigError

CHUNK_BYTES = 256 << 20  # the (rows, k) distance block of one chunk on a GPU: 256 MB at most
# on a CPU a block that stays in cache while `min` reads it: 4 MB (7,652 x 128, K sweep 64..2048,
# 3 restarts: Lloyd 1.16 s against 1.64 s with 256 MB blocks and 1.82 s in faiss; docs/clustering.md)
CPU_CHUNK_BYTES = 4 << 20


def _chunk_rows(n: int, k: int, device: torch.device | None = None) -> int:
    if device is not None and device.type == "cpu":
        return max(256, min(n, CPU_CHUNK_BYTES // (4 * max(k, 1))))
    return max(1024, min(n, CHUNK_BYTES // (4 * max(k, 1))))


def _nearest(x: torch.Tensor, squares: torch.Tensor, centroids: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels (N,) int64, squared distances (N,) float32) of every row of x to its nearest centroid."""
    n, k = len(x), len(centroids)
    c_squares = (centroids * centroids).sum(dim=1)
    labels = torch.empty(n, dtype=torch.int64, device=x.device)
    distances = torch.empty(n, dtype=torch.float32, device=x.device)
    step = _chunk_rows(n, k, x.device)
    for start in range(0, n, step):
        block = x[start:start + step]
        d = torch.addmm(c_squares[None, :], block, centroids.T, alpha=-2.0)  # ||c||^2 - 2 x.c
        values, index = d.min(dim=1)
        labels[start:start + step] = index
        distances[start:start + step] = (values + squares[start:start + step]).clamp_min_(0)
    return labels, distances


def kmeans_plusplus_torch(x: torch.Tensor, k: int, *, generator: torch.Generator,
                          trials: int | None = None) -> torch.Tensor:
    """Greedy k-means++ seeds (k, D) of x (N, D), as `nscnet.clustering.cluster.kmeans_plusplus`."""
    n = len(x)
    trials = trials or 2 + int(math.log(k))
    squares = (x * x).sum(dim=1)
    centers = torch.empty((k, x.shape[1]), dtype=x.dtype, device=x.device)
    first = int(torch.randint(n, (1,), generator=generator, device=generator.device).item())
    centers[0] = x[first]
    nearest = (squares - 2 * (x @ x[first]) + squares[first]).clamp_min_(0)
    for c in range(1, k):
        cumulative = torch.cumsum(nearest.double(), dim=0)
        total = cumulative[-1]
        draws = torch.rand(trials, generator=generator, device=generator.device, dtype=torch.float64).to(x.device)
        candidates = torch.searchsorted(cumulative, draws * total).clamp_(max=n - 1)
        if float(total) <= 0:  # every point is already a centroid
            candidates = torch.randint(n, (trials,), generator=generator, device=generator.device).to(x.device)
        distances = torch.addmm(squares[candidates][None, :] + squares[:, None], x, x[candidates].T, alpha=-2.0)
        distances = torch.minimum(distances.clamp_min_(0), nearest[:, None])
        best = int(torch.argmin(distances.sum(dim=0)).item())
        centers[c] = x[candidates[best]]
        nearest = distances[:, best].contiguous()
    return centers


def _lloyd(x: torch.Tensor, squares: torch.Tensor, centroids: torch.Tensor, iterations: int
           ) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """(labels, centroids, inertia, assignment passes run) of Lloyd iterations from `centroids`."""
    k, d = centroids.shape
    labels = None
    passes = 0
    for _ in range(iterations):
        new_labels, distances = _nearest(x, squares, centroids)
        passes += 1
        if labels is not None and torch.equal(new_labels, labels):  # settled: these are the final labels
            return labels, centroids, float(distances.double().sum().item()), passes
        labels = new_labels
        sums = torch.zeros((k, d), dtype=torch.float32, device=x.device).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(torch.float32)
        empty = counts == 0
        centroids = sums / counts.clamp_min(1)[:, None]
        if bool(empty.any()):  # the farthest points become the empty clusters' centroids
            far = torch.topk(distances, int(empty.sum().item())).indices
            centroids[empty] = x[far]
    labels, distances = _nearest(x, squares, centroids)
    return labels, centroids, float(distances.double().sum().item()), passes + 1


def kmeans_torch(features: Any, k: int, *, n_init: int = 3, seed: int = 0, init: Any = None,
                 iterations: int = LLOYD_ITERATIONS, device: str | torch.device | None = None,
                 starts: Sequence[Any] | None = None) -> KMeansResult:
    """k-means of features (N, D) (numpy or torch) into k clusters on `device` (default: the
    features' device, CPU for numpy); numpy results, as `nscnet.clustering.cluster.kmeans`.

    init: optional (k, D) warm-start centroids (one run from them instead of n_init restarts).
    starts: optional start centroids of each restart, each (>= k, D), their first k rows used
    (`nscnet.clustering.cluster.kmeans` passes the numpy k-means++ seeds, or a K sweep's).
    """
    x = torch.as_tensor(np.asarray(features, dtype=np.float32) if not torch.is_tensor(features) else features)
    device = torch.device(device) if device is not None else x.device
    x = x.to(device=device, dtype=torch.float32).contiguous()
    n = len(x)
    if not 1 <= k <= n:
        raise ConfigError(f"k={k} must be between 1 and the number of segments ({n})")
    if init is not None and tuple(np.shape(init)) != (k, x.shape[1]):
        raise ConfigError(f"init centroids have shape {tuple(np.shape(init))}, expected ({k}, {x.shape[1]})")
    squares = (x * x).sum(dim=1)
    best: tuple[torch.Tensor, torch.Tensor, float] | None = None
    if init is not None:
        starts = [init]
    elif starts is not None:
        starts = [np.asarray(start, dtype=np.float32)[:k] for start in starts]
    else:
        starts = [None] * n_init
    passes = 0
    for restart, start in enumerate(starts):
        if start is None:
            generator = torch.Generator(device="cpu").manual_seed(int(seed) + restart)
            start = kmeans_plusplus_torch(x, k, generator=generator)
        else:
            start = torch.as_tensor(np.asarray(start, dtype=np.float32), device=device)
        labels, centroids, inertia, run = _lloyd(x, squares, start.clone(), iterations)
        passes += run
        if best is None or inertia < best[2]:
            best = (labels, centroids, inertia)
    labels, centroids, inertia = best
    return KMeansResult(labels.cpu().numpy().astype(np.int64), centroids.cpu().numpy().astype(np.float32), inertia,
                        iterations=passes)
