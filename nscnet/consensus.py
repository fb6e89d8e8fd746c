"""Consensus clustering over seeds (evidence accumulation, Fred & Jain 2005).

`consensus_labels(features, cfg, runs)` runs the final clustering of `cfg`
(`nscnet.models.levers.final_clustering`: post-processing, optional UMAP, the algorithm) under
`runs` seeds, counts how often each pair of segments shares a cluster (the co-association
matrix, `co_association`), and cuts the average-linkage tree of 1 - co-association at k
clusters (`cut_co_association`). Measured in benchmarks/features.py (docs/RESULTS.md,
"Stronger features and the DeepCluster phase"). Pure functions; memory O(N^2)
(about 0.5 GB at 7,652 segments).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def co_association(labelings: list[np.ndarray]) -> np.ndarray:
    """(N, N) float32 share of the labelings in which i and j have the same label (noise, -1,
    shares a cluster with nobody, itself included)."""
    n = len(labelings[0])
    together = np.zeros((n, n), dtype=np.float32)
    for labels in labelings:
        labels = np.asarray(labels)
        kept = labels >= 0
        onehot = np.zeros((n, int(labels.max()) + 1 if kept.any() else 1), dtype=np.float32)
        onehot[np.flatnonzero(kept), labels[kept]] = 1.0
        together += onehot @ onehot.T
    return together / len(labelings)


def cut_co_association(together: np.ndarray, k: int) -> np.ndarray:
    """(N,) labels 0..k-1: average-linkage tree of the distance 1 - co-association, cut at k clusters."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    distance = 1.0 - together.astype(np.float64)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average")
    labels = fcluster(tree, t=k, criterion="maxclust")
    _, labels = np.unique(labels, return_inverse=True)
    return labels.astype(np.int64)


def consensus_labels(features: np.ndarray, cfg: Any, runs: int = 5) -> tuple[np.ndarray, list[np.ndarray]]:
    """(consensus labels at cfg.k, the `runs` single labelings) of the final clustering of cfg
    under seeds cfg.seed * 1000 + 0..runs-1."""
    from nscnet.config import replace
    from nscnet.models.levers import final_clustering

    if runs < 2:
        raise ValueError(f"runs={runs}: a consensus needs at least 2 labelings")
    singles = [final_clustering(features, replace(cfg, seed=cfg.seed * 1000 + r))[1].labels for r in range(runs)]
    return cut_co_association(co_association(singles), cfg.k), singles
