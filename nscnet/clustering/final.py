"""The final clustering of learned embeddings (NSCNet, and every deep model's `final_*` fields):
the training post-processing, optionally UMAP (`final_reducer`, `nscnet.features.reduction`), then
`final_algorithm` at `k`."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from nscnet.clustering.cluster import ClusterResult, fit_clusters, label_centroids
from nscnet.config import NscnetConfig, replace
from nscnet.features.postprocess import postprocess


def needs_final_clustering(cfg: NscnetConfig) -> bool:
    """True when the final clustering differs from the last epoch's pseudo-labels."""
    return bool(cfg.k_train and cfg.k_train != cfg.k) or cfg.final_reducer != "pca" or cfg.final_algorithm != "kmeans"


def final_clustering(features: np.ndarray, cfg: NscnetConfig) -> tuple[np.ndarray, ClusterResult, Any]:
    """Final clustering of learned embeddings (N, D) at k: (clustered features, result, params used).

    The training post-processing (PCA, whitening, L2) first; with final_reducer=umap, UMAP to
    umap_dim dimensions after it (Sainburg et al. 2020); then final_algorithm.
    """
    return fit_final_clustering(features, cfg)[:3]


def fit_final_clustering(features: np.ndarray, cfg: NscnetConfig) -> tuple[np.ndarray, ClusterResult, Any, list]:
    """`final_clustering` and the fitted steps from the embeddings to the clustered space
    (post-processing, then `nscnet.features.reduction.Umap` with final_reducer=umap)."""
    from nscnet.features.reduction import umap_fit

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
