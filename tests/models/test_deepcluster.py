"""The DeepCluster stabilisers of NSCNet (re-seeding, label matching, warm start) end to end."""

from __future__ import annotations

import numpy as np
import pytest

from nscnet.clustering.cluster import label_centroids
from nscnet.config import NscnetConfig
from nscnet.models.deepcluster import match_labels, reseed_empty
from nscnet.runs import tracking as T
from tests.fixtures_deep import TINY, one_torch_thread, tiny_images as data  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_reseed_empty_fills_every_cluster_by_splitting_the_largest():
    x = np.concatenate([np.zeros((10, 2)), np.ones((30, 2)) + np.linspace(0, 1, 30)[:, None]])
    labels = np.array([0] * 10 + [1] * 30)
    out, reseeded = reseed_empty(x, labels, k=4)
    assert reseeded == 2 and set(np.bincount(out, minlength=4)) != {0} and (np.bincount(out, minlength=4) > 0).all()


def test_match_labels_undoes_a_renaming_and_centroids_are_label_means():
    previous = np.repeat(np.arange(3), 5)
    assert (match_labels((previous + 1) % 3, previous, 3) == previous).all()
    x = np.arange(15, dtype=float)[:, None]
    assert label_centroids(x, previous, 3)[:, 0].tolist() == [2.0, 7.0, 12.0]


def test_nscnet_levers_run_end_to_end_and_final_clustering_is_at_k(tracking, data):
    from nscnet.models.nscnet import run_nscnet

    metrics = run_nscnet(NscnetConfig(data=str(data), **TINY, k_train=8, kmeans_warm_start=True, reseed_empty=True,
                                      keep_head=True, final_algorithm="kmeans"))
    assert metrics["n_clusters"] == 4            # final clustering at k, trained at k_train
    assert metrics["nmi_truth"] > 0.5
    assert 0 <= metrics["stability"] <= 1
    assert "reseeded_clusters" in T.get_run(metrics["run_id"]).data.metrics
    hdb = run_nscnet(NscnetConfig(data=str(data), **{**TINY, "epochs": 1}, final_algorithm="hdbscan",
                                  min_cluster_size=5))
    assert hdb["n_clusters"] >= 2 and hdb["nmi_truth"] > 0.3
