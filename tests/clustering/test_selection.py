"""Label-free selection: stability, rank correlations of criteria with nmi_truth."""

from __future__ import annotations

import numpy as np
import pytest

from nscnet.clustering.cluster import stability
from nscnet.clustering.selection import best_criterion, rank_correlations, resample_stability
from nscnet.config import BasenetConfig, ConfigError
from nscnet.runs import tracking as T
from tests.fixtures_deep import make_dataset, one_torch_thread  # noqa: F401 (fixture)

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("quality") / "ds", classes=4, per_class=16, height=32, width=64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_stability_is_one_for_identical_clusterings_and_falls_for_random_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=300)
    assert stability([labels, labels.copy(), labels.copy()]) == pytest.approx(1.0)
    assert stability([labels, (labels + 2) % 5]) == pytest.approx(1.0)  # renaming clusters changes nothing
    random = [rng.integers(0, 5, size=300) for _ in range(3)]
    assert stability(random) < 0.1


def test_resample_stability_is_high_for_separated_blobs_and_low_for_noise():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=20, size=(4, 5))
    blobs = np.concatenate([c + rng.normal(size=(60, 5)) for c in centres])
    params = BasenetConfig(k=4, seed=0)
    assert resample_stability(blobs, params, 3) == pytest.approx(1.0, abs=1e-6)
    noise = rng.uniform(size=(240, 5))
    assert resample_stability(noise, BasenetConfig(k=12, seed=0), 3) < 0.95
    with pytest.raises(ConfigError, match="stability_runs=0"):
        resample_stability(blobs, params, 0)


def test_rank_correlations_flip_davies_bouldin_and_pick_the_best_criterion():
    rows = [{"nmi_truth": t, "silhouette": s, "davies_bouldin": d}
            for t, s, d in [(0.1, 0.5, 3.0), (0.5, 0.2, 2.0), (0.9, 0.4, 1.0), (0.7, 0.1, 1.5)]]
    corr = rank_correlations(rows, ("silhouette", "davies_bouldin", "stability"))
    assert corr["davies_bouldin"] == pytest.approx(1.0)
    assert corr["stability"] is None
    assert best_criterion(corr) == "davies_bouldin"


def test_basenet_logs_stability(tracking, data):
    from nscnet.models.basenet import run_basenet

    metrics = run_basenet(BasenetConfig(data=str(data), k=4, pca_dim=8, export=False, stability_runs=2))
    assert 0 < metrics["stability"] <= 1.0
    assert "stability" in T.get_run(metrics["run_id"]).data.metrics
