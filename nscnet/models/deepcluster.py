"""DeepCluster's stabilisers for NSCNet's per-epoch pseudo-labels (pure functions, used by
`nscnet.models.nscnet.run_nscnet`):

- `training_k(cfg)`: clusters of the per-epoch pseudo-labels (`k_train`, over-clustering).
- `reseed_empty(processed, labels, k, seed)`: fill empty clusters by splitting the largest
  one along its main axis, as DeepCluster does (`reseed_empty`).
- `match_labels(labels, previous, k)`: renumber pseudo-labels to agree best with the
  previous epoch's (Hungarian matching), so a kept head (`keep_head`) still means the same.
- `cluster_epoch(features, cfg, previous)`: one epoch's pseudo-labels with these levers; the
  warm start of its k-means (`kmeans_warm_start`) is the previous labels' means in the
  current epoch's post-processed space (`nscnet.clustering.cluster.label_centroids`).

The presets that combine these levers are in `nscnet.presets`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from nscnet.clustering.cluster import ClusterResult, fit_clusters, label_centroids
from nscnet.config import NscnetConfig, replace
from nscnet.features.postprocess import postprocess


def training_k(cfg: NscnetConfig) -> int:
    """Clusters of the per-epoch pseudo-labels: k_train when set, else k."""
    return cfg.k_train or cfg.k


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

    device: the training device; on CUDA the k-means runs there (`nscnet.clustering.kmeans_torch`)."""
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
