"""DeepCluster's stabilisers and the final clustering of learned embeddings, for NSCNet.

Pure functions (arrays in, arrays out), used by `nscnet.models.nscnet.run_nscnet`:

- `training_k(cfg)`: clusters of the per-epoch pseudo-labels (`k_train`, over-clustering).
- `label_centroids(processed, labels, k)`: (k, d) means of the points of each label, the
  warm start of the next epoch's k-means (`kmeans_warm_start`). They are computed in the
  current epoch's post-processed space, so a refitted PCA never mixes two bases.
- `reseed_empty(processed, labels, centroids, k, seed)`: fill empty clusters by splitting the
  largest one along its main axis, as DeepCluster does (`reseed_empty`).
- `match_labels(labels, previous, k)`: renumber pseudo-labels to agree best with the
  previous epoch's (Hungarian matching), so a kept head (`keep_head`) still means the same.
- `fit_head(head, features, labels, steps, lr)`: train a fresh classifier head alone on the
  epoch's (fixed) embeddings before the network sees its gradients (`head_warmup`), so the
  first batches do not push a random head's error into a pretrained network.
- `resolve_head_warmup(cfg)`: `head_warmup` -1 (auto) -> 200 steps when the network starts
  pretrained (`pretrain_epochs`, `pretrained_run`, `pretrained_weights`), else 0.
- `final_clustering(features, cfg)`: the learned embeddings post-processed as in training,
  optionally reduced by UMAP (`final_reducer`), clustered by `final_algorithm` at `k`.

The presets that combine these levers are in `nscnet.presets`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from nscnet.cluster import ClusterResult, fit_clusters
from nscnet.config import NscnetConfig, replace
from nscnet.postprocess import postprocess


def training_k(cfg: NscnetConfig) -> int:
    """Clusters of the per-epoch pseudo-labels: k_train when set, else k."""
    return cfg.k_train or cfg.k


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


def reseed_empty(processed: np.ndarray, labels: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """Labels (N,) with no empty cluster among 0..k-1: each empty one takes the half of the
    largest cluster on one side of its main axis (a split of the largest). Returns (labels, re-seeded).
    """
    x = np.asarray(processed, dtype=np.float32)
    labels = np.asarray(labels).copy()
    reseeded = 0
    rng = np.random.default_rng(seed)
    for empty in np.flatnonzero(np.bincount(labels, minlength=k)[:k] == 0):
        largest = int(np.argmax(np.bincount(labels, minlength=k)))
        members = np.flatnonzero(labels == largest)
        if len(members) < 2:
            break
        centred = x[members] - x[members].mean(axis=0)
        if np.allclose(centred, 0):  # identical points: split at random
            side = rng.permutation(len(members)) < len(members) // 2
        else:
            axis = np.linalg.svd(centred, full_matrices=False)[2][0]
            projection = centred @ axis
            side = projection > np.median(projection)
            if not side.any() or side.all():
                side = rng.permutation(len(members)) < len(members) // 2
        labels[members[side]] = empty
        reseeded += 1
    return labels, reseeded


def match_labels(labels: np.ndarray, previous: np.ndarray, k: int) -> np.ndarray:
    """Labels (N,) renumbered so that label j overlaps the previous epoch's label j the most."""
    contingency = np.zeros((k, k), dtype=np.int64)
    np.add.at(contingency, (np.asarray(labels), np.asarray(previous)), 1)
    rows, cols = linear_sum_assignment(-contingency)
    mapping = np.empty(k, dtype=np.int64)
    mapping[rows] = cols
    return mapping[labels]


def fit_head(head, features: np.ndarray, labels: np.ndarray, *, steps: int, lr: float = 1e-2,
             batch_size: int = 1024, seed: int = 0) -> float:
    """Train `head` (a classifier head of `nscnet.models.arcface`, on the features' device: CPU)
    for `steps` Adam steps of cross-entropy on (features (N, D), labels (N,)), minibatches of
    `batch_size` drawn with replacement; the network is not touched. Returns the mean
    cross-entropy of all N afterwards."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    device = next(head.parameters()).device
    x, y = x.to(device), y.to(device)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(steps):
        pick = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=generator).to(device)
        loss = F.cross_entropy(head(x[pick], y[pick]).float(), y[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float(F.cross_entropy(head(x, y).float(), y))


# head_warmup after pretraining: one DeepCluster epoch then held the pretrained result (UMAP +
# HDBSCAN 0.890 vs 0.885 and 0.892 vs 0.888 for two seeds; a fresh head: 0.877, 0.875),
# benchmarks/features.py, docs/RESULTS.md
HEAD_WARMUP_AFTER_PRETRAINING = 200


def resolve_head_warmup(cfg: NscnetConfig) -> NscnetConfig:
    """cfg with head_warmup -1 (auto) resolved: HEAD_WARMUP_AFTER_PRETRAINING when the network
    starts pretrained (in-run SimCLR, a pretrain run, or a weights file), else 0 (the paper)."""
    if cfg.head_warmup >= 0:
        return cfg
    pretrained = bool(cfg.pretrain_epochs or cfg.pretrained_run or cfg.pretrained_weights)
    return replace(cfg, head_warmup=HEAD_WARMUP_AFTER_PRETRAINING if pretrained else 0)


def cluster_epoch(features: np.ndarray, cfg: NscnetConfig, previous: np.ndarray | None, *, device: Any = None
                  ) -> tuple[np.ndarray, np.ndarray, ClusterResult, dict[str, float]]:
    """One epoch's pseudo-labels with the levers of cfg: (labels, processed, result, lever metrics).

    device: the training device; on CUDA the k-means runs there (`nscnet.kmeans_torch`)."""
    k = training_k(cfg)
    params = replace(cfg, k=k)
    processed, _ = postprocess(features, params)
    init = None
    if cfg.kmeans_warm_start and previous is not None:
        init = label_centroids(processed, previous, k)
    result = fit_clusters(processed, params, init=init, device=device)
    labels, notes = result.labels, {}
    if cfg.reseed_empty:
        labels, notes["reseeded_clusters"] = reseed_empty(processed, labels, k, seed=cfg.seed)
    if cfg.keep_head and previous is not None:
        labels = match_labels(labels, previous, k)
    if labels is not result.labels:
        result = dataclasses.replace(result, labels=labels, n_clusters=int(len(np.unique(labels))),
                                     centroids=label_centroids(processed, labels, k))
    return labels, processed, result, notes


def needs_final_clustering(cfg: NscnetConfig) -> bool:
    """True when the final clustering differs from the last epoch's pseudo-labels."""
    return bool(cfg.k_train and cfg.k_train != cfg.k) or cfg.final_reducer != "pca" or cfg.final_algorithm != "kmeans"


def umap_reduce(x: np.ndarray, cfg: Any) -> np.ndarray:
    """UMAP (umap_dim, umap_neighbors, umap_min_dist, seed of cfg) of x (N, d) -> (N, umap_dim) float32."""
    from nscnet.reduction import umap_fit

    return umap_fit(x, cfg)[0]


def final_clustering(features: np.ndarray, cfg: NscnetConfig) -> tuple[np.ndarray, ClusterResult, Any]:
    """Final clustering of learned embeddings (N, D) at k: (clustered features, result, params used).

    The training post-processing (PCA, whitening, L2) first; with final_reducer=umap, UMAP to
    umap_dim dimensions after it (Sainburg et al. 2020); then final_algorithm.
    """
    return fit_final_clustering(features, cfg)[:3]


def fit_final_clustering(features: np.ndarray, cfg: NscnetConfig) -> tuple[np.ndarray, ClusterResult, Any, list]:
    """`final_clustering` and the fitted steps from the embeddings to the clustered space
    (post-processing, then `nscnet.reduction.Umap` with final_reducer=umap)."""
    from nscnet.reduction import umap_fit

    params = replace(cfg, algorithm=cfg.final_algorithm, k_train=0)
    processed, notes = postprocess(features, params)
    chain = [notes["pipeline"]]
    if cfg.final_reducer == "umap":
        processed, reducer = umap_fit(processed, cfg)
        chain.append(reducer)
    result = fit_clusters(processed, params)
    keep = result.labels >= 0  # all noise (fit_clusters warns): no cluster, no centroid
    if keep.any() and result.centroids is None:  # the mean of every cluster
        k = int(result.labels.max()) + 1
        result = dataclasses.replace(result, centroids=label_centroids(processed[keep], result.labels[keep], k))
    return processed, result, params, chain
