"""Figures: pure functions from arrays to plotly figures; their content is checked, not drawn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from nscnet.report import plots


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(n_samples=200, centers=4, n_features=6, cluster_std=0.4, random_state=0)
    return x, y


def test_lda_projection_colours_clusters_and_greys_noise(blobs):
    x, y = blobs
    labels = y.copy()
    labels[:10] = -1
    fig = plots.lda_projection(x, labels)
    assert fig.layout.xaxis.title.text == "LDA 1"
    names = [t.name for t in fig.data]
    assert names == ["noise", "cluster 0", "cluster 1", "cluster 2", "cluster 3"]
    assert sum(len(t.x) for t in fig.data) == 200
    # LDA separates the blobs: cluster means far apart relative to their spread
    means = np.array([[np.mean(t.x), np.mean(t.y)] for t in fig.data[1:]])
    spread = np.mean([np.std(t.x) for t in fig.data[1:]])
    gaps = np.linalg.norm(means[:, None] - means[None], axis=-1)[np.triu_indices(4, 1)]
    assert gaps.min() > 3 * spread


@pytest.mark.parametrize("labels", [np.zeros(200, dtype=int), np.arange(200) % 2])
def test_lda_projection_falls_back_to_pca_when_lda_cannot_give_two_axes(blobs, labels):
    x, _ = blobs
    fig = plots.lda_projection(x, labels)
    assert fig.layout.xaxis.title.text == "PCA 1"
    assert sum(len(t.x) for t in fig.data) == 200


def test_lda_projection_of_many_clusters_is_one_trace_with_a_colour_scale():
    x, y = make_blobs(n_samples=400, centers=40, n_features=5, random_state=0)
    fig = plots.lda_projection(x, y)
    assert len(fig.data) == 1 and len(fig.data[0].x) == 400
    assert list(fig.data[0].marker.color) == list(y)


def test_lda_projection_of_one_dimensional_features():
    x = np.linspace(0, 1, 30)[:, None]
    fig = plots.lda_projection(x, (np.arange(30) // 10))
    assert sum(len(t.x) for t in fig.data) == 30


def test_cluster_sizes_are_rank_ordered_without_noise():
    labels = np.array([0] * 5 + [1] * 20 + [2] * 1 + [-1] * 7)
    fig = plots.cluster_sizes(labels)
    assert list(fig.data[0].y) == [20, 5, 1] and list(fig.data[0].x) == [1, 2, 3]
    assert "7 noise" in fig.layout.title.text


def test_contingency_counts_every_segment_once():
    labels = np.array([0, 0, 1, 1, 1, -1])
    truth = np.array(["b", "b", "a", "a", "b", "a"])
    fig = plots.contingency(labels, truth)
    z = np.array(fig.data[0].z)
    assert z.sum() == 6 and z.shape == (3, 2)
    assert list(fig.data[0].x) == ["a", "b"]
    assert set(fig.data[0].y) == {"noise", "cluster 0", "cluster 1"}
    row = list(fig.data[0].y).index("cluster 0")
    assert list(z[row]) == [0, 2]


def test_metric_curve_has_one_panel_per_metric_and_gaps_for_missing():
    fig = plots.metric_curve([64, 128, 256], {"inertia": [3.0, 2.0, 1.0], "silhouette": [0.1, None, 0.3]},
                             "K", "sweep", log_x=True)
    assert [t.name for t in fig.data] == ["inertia", "silhouette"]
    assert np.isnan(fig.data[1].y[1]) and fig.data[1].y[2] == 0.3
    assert fig.layout.xaxis.type == "log" and fig.layout.title.text == "sweep"
