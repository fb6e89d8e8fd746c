"""Cluster-uniform sampler: equal draws per non-empty cluster, repeats, seeded epochs."""

from __future__ import annotations

import numpy as np
import pytest

from nscnet.models.sampler import ClusterUniformSampler, uniform_cluster_indices


def test_every_non_empty_cluster_is_drawn_equally_often_with_repeats():
    labels = np.array([0] * 90 + [1] * 8 + [2] * 2 + [-1] * 5)     # cluster 3 is empty, -1 noise
    indices = uniform_cluster_indices(labels, 300, np.random.default_rng(0))
    assert len(indices) == 300
    counts = np.bincount(labels[indices], minlength=3)
    assert counts.tolist() == [100, 100, 100]
    assert set(np.unique(indices[labels[indices] == 2])) == {98, 99}     # the tiny cluster repeats
    big = indices[labels[indices] == 0]
    assert len(np.unique(big)) == 90                                     # no repeat while members last


def test_remainder_goes_to_random_clusters_and_total_is_exact():
    labels = np.repeat(np.arange(3), 4)
    counts = np.bincount(labels[uniform_cluster_indices(labels, 13, np.random.default_rng(1))])
    assert counts.sum() == 13 and counts.max() - counts.min() == 1


def test_sampler_epoch_length_and_seeded_epochs():
    labels = np.repeat(np.arange(4), 5)
    sampler = ClusterUniformSampler(20, epoch_length=3, seed=7)
    sampler.set_labels(labels, epoch=2)
    first = list(sampler)
    assert len(first) == len(sampler) == 60
    assert list(sampler) == first
    sampler.set_labels(labels, epoch=3)
    assert list(sampler) != first
    with pytest.raises(ValueError):
        sampler.set_labels(labels[:5], epoch=0)
