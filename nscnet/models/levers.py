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
- `final_clustering(features, cfg)`: the learned embeddings post-processed as in training,
  optionally reduced by UMAP (`final_reducer`), clustered by `final_algorithm` at `k`.
- `apply_preset(cfg)`: the named recipe of `preset` (defaults only; explicit values win).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from nscnet.cluster import ClusterResult, fit_clusters
from nscnet.config import NscnetConfig, replace
from nscnet.postprocess import postprocess


# `--preset quality`: the recipe measured best on real song (docs/RESULTS.md). Each value is
# applied only where the user left the field at its default.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # benchmarks/quality.py "nscnet --preset quality": SimCLR pretraining of a small CNN inside
    # the run (3 epochs of 2,048 images, `pretrain`'s default views with edge masks), no
    # DeepCluster epoch (one, even at lr 1e-4, lowered nmi_truth from 0.871 to 0.851), then
    # UMAP 10 + HDBSCAN of the learned embeddings, min_cluster_size and min_samples from N
    # (nscnet.defaults: sqrt(N)/2, 44 at 7,652 segments; the constants 50 / 10 left small sets
    # all noise, issue 13). With
    # --epochs N the DeepCluster epochs use the levers below (warm start, re-seeding, lr 1e-3).
    "quality": {"backbone": "small_cnn", "embedding_dim": 128, "pca_dim": 64, "batch_size": 64,
                "pretrain_epochs": 3, "pretrain_epoch_size": 2048, "epochs": 0,
                "lr": 1e-3, "kmeans_warm_start": True, "reseed_empty": True, "final_reducer": "umap",
                "final_algorithm": "hdbscan"},
}


def apply_preset(cfg: NscnetConfig) -> NscnetConfig:
    """`cfg` with the values of its preset for every field still at its class default and not
    named in `preset_keep`.

    A run started from a `pretrain` run (`pretrained_run`) does not pretrain again. A value
    equal to the class default cannot be told from no value, hence `preset_keep`: the `nscnet`
    command line lists there the preset fields you typed (`--preset quality --min_cluster_size 5`
    keeps 5); under `mlflow run`, where every parameter arrives, pass `-P preset_keep=...`.
    """
    values = dict(PRESETS[cfg.preset])
    if cfg.pretrained_run:
        values.pop("pretrain_epochs", None)
    keep = {name.strip() for name in cfg.preset_keep.split(",") if name.strip()}
    defaults = {f.name: f.default for f in dataclasses.fields(NscnetConfig)}
    changes = {name: value for name, value in values.items()
               if name not in keep and getattr(cfg, name) == defaults[name]}
    return replace(cfg, **changes) if changes else cfg


def typed_preset_fields(values: dict[str, Any]) -> dict[str, Any]:
    """`values` (the options given on a command line) with `preset_keep` naming the given
    fields that the chosen preset would otherwise set."""
    preset = PRESETS.get(values.get("preset", ""), {})
    typed = sorted(name for name in values if name in preset)
    given = [name for name in str(values.get("preset_keep", "")).split(",") if name.strip()]
    if not typed:
        return values
    return {**values, "preset_keep": ",".join(dict.fromkeys(given + typed))}


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


def cluster_epoch(features: np.ndarray, cfg: NscnetConfig, previous: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray, ClusterResult, dict[str, float]]:
    """One epoch's pseudo-labels with the levers of cfg: (labels, processed, result, lever metrics)."""
    k = training_k(cfg)
    params = replace(cfg, k=k)
    processed, _ = postprocess(features, params)
    init = None
    if cfg.kmeans_warm_start and previous is not None:
        init = label_centroids(processed, previous, k)
    result = fit_clusters(processed, params, init=init)
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
    import umap  # heavy import (numba): only when asked for

    from nscnet.defaults import auto_umap_neighbors

    n = len(x)
    neighbors = cfg.umap_neighbors or auto_umap_neighbors(n)  # 0 = auto (a runner has resolved it already)
    reducer = umap.UMAP(n_components=max(1, min(cfg.umap_dim, n - 2)), n_neighbors=max(2, min(neighbors, n - 1)),
                        min_dist=cfg.umap_min_dist, random_state=cfg.seed, n_jobs=1)
    return np.asarray(reducer.fit_transform(x), dtype=np.float32)


def final_clustering(features: np.ndarray, cfg: NscnetConfig) -> tuple[np.ndarray, ClusterResult, Any]:
    """Final clustering of learned embeddings (N, D) at k: (clustered features, result, params used).

    The training post-processing (PCA, whitening, L2) first; with final_reducer=umap, UMAP to
    umap_dim dimensions after it (Sainburg et al. 2020); then final_algorithm.
    """
    params = replace(cfg, algorithm=cfg.final_algorithm, k_train=0)
    processed, _ = postprocess(features, params)
    if cfg.final_reducer == "umap":
        processed = umap_reduce(processed, cfg)
    result = fit_clusters(processed, params)
    keep = result.labels >= 0  # all noise (fit_clusters warns): no cluster, no centroid
    if keep.any() and result.centroids is None:  # the mean of every cluster
        k = int(result.labels.max()) + 1
        result = dataclasses.replace(result, centroids=label_centroids(processed[keep], result.labels[keep], k))
    return processed, result, params
