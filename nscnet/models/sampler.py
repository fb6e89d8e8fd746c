"""The cluster-uniform sampler of DeepCluster: every non-empty cluster is drawn equally often.

Without it, a big cluster would dominate the pseudo-label classification and the network
would learn to put everything in it. Samples of small clusters repeat when needed.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler


def uniform_cluster_indices(labels: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """`n_samples` dataset indices, drawn uniformly over the non-empty clusters, shuffled.

    labels: (N,) int pseudo-labels (negative = noise, never drawn). Each cluster contributes
    n_samples / n_clusters indices (the remainder to random clusters), without replacement
    while the cluster has enough members, with replacement beyond.
    """
    labels = np.asarray(labels)
    clusters = np.unique(labels[labels >= 0])
    if len(clusters) == 0:
        raise ValueError("no non-empty cluster to sample from")
    per_cluster = np.full(len(clusters), n_samples // len(clusters))
    per_cluster[rng.choice(len(clusters), n_samples % len(clusters), replace=False)] += 1
    chosen = []
    for cluster, count in zip(clusters, per_cluster):
        members = np.flatnonzero(labels == cluster)
        repeats, rest = divmod(int(count), len(members))
        parts = [rng.permutation(members) for _ in range(repeats)]
        parts.append(rng.choice(members, rest, replace=False))
        chosen.append(np.concatenate(parts))
    return rng.permutation(np.concatenate(chosen)).astype(np.int64)


class ClusterUniformSampler(Sampler[int]):
    """A torch Sampler over `uniform_cluster_indices`, reseeded per epoch.

    `set_labels(labels, epoch)` installs the new pseudo-labels; the draw depends only on
    (labels, seed, epoch), so a resumed epoch draws the same samples. The sampler lives in
    the main process, so DataLoader workers (persistent across epochs) see the new order.
    """

    def __init__(self, n_items: int, *, epoch_length: int = 1, seed: int = 0):
        self.n_items = int(n_items)
        self.epoch_length = int(epoch_length)
        self.seed = int(seed)
        self.labels: np.ndarray | None = None
        self.epoch = 0

    def set_labels(self, labels: np.ndarray, epoch: int) -> None:
        if len(labels) != self.n_items:
            raise ValueError(f"{len(labels)} labels for {self.n_items} items")
        self.labels = np.asarray(labels)
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.epoch_length * self.n_items

    def __iter__(self) -> Iterator[int]:
        if self.labels is None:
            raise RuntimeError("call set_labels before iterating")
        rng = np.random.default_rng([self.seed, self.epoch])
        return iter(uniform_cluster_indices(self.labels, len(self), rng).tolist())
