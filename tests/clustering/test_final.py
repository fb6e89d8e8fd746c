"""The final clustering of a deep model's embeddings (UMAP + HDBSCAN)."""

from __future__ import annotations

import numpy as np
import pytest
from nscnet.config import NscnetConfig
from tests.fixtures_deep import one_torch_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_final_clustering_by_umap_and_hdbscan_finds_separated_groups():
    from nscnet.clustering.final import final_clustering

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=10, size=(3, 16))
    features = np.concatenate([c + rng.normal(size=(40, 16)) for c in centres])
    truth = np.repeat(np.arange(3), 40)
    cfg = NscnetConfig(k=3, pca_dim=8, final_reducer="umap", final_algorithm="hdbscan", min_cluster_size=10,
                       umap_dim=2, seed=0)
    processed, result, params = final_clustering(features, cfg)
    assert processed.shape == (120, 2) and params.algorithm == "hdbscan"
    from sklearn.metrics import normalized_mutual_info_score
    assert normalized_mutual_info_score(truth, result.labels) > 0.9
    assert result.centroids.shape[0] == result.labels.max() + 1
