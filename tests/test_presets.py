"""Presets: a defaults layer between the built-in defaults and the user's values."""

from __future__ import annotations

import pytest
from nscnet.config import ConfigError, NscnetConfig
from nscnet.clustering.final import needs_final_clustering
from tests.fixtures_deep import one_torch_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_presets_are_a_defaults_layer_under_the_given_values_and_k_train_is_checked():
    from nscnet import presets
    from nscnet.cli import config_from_args

    cfg = presets.config("nscnet", "quality", epochs=7)
    assert cfg.epochs == 7 and cfg.kmeans_warm_start and cfg.final_reducer == "umap" and cfg.pretrain_epochs == -1
    assert presets.config("nscnet", "quality", pretrained_run="abc").pretrain_epochs == 0  # no second pretraining
    # a given value wins even when it equals the built-in default (min_cluster_size 5, lr 1e-4)
    typed = config_from_args("nscnet", ["--preset", "quality", "--min_cluster_size", "5", "--lr", "1e-4"])
    assert (typed.min_cluster_size, typed.lr, typed.min_samples, typed.backbone) == (5, 1e-4, 0, "small_cnn")
    assert cfg.min_cluster_size == 0 and cfg.min_samples == 0  # the preset leaves them to N (nscnet.defaults)
    assert typed == presets.config("nscnet", "quality", min_cluster_size=5, lr=1e-4)
    assert config_from_args("nscnet", []) == NscnetConfig() == presets.config("nscnet", "paper")
    # every field of the preset given (what `mlflow run -P preset=quality` on the plain entry point does): refused
    everything = [f"--{name}={value}" for name, value in presets.PRESETS["nscnet"]["quality"].items()]
    with pytest.raises(ConfigError, match="nscnet-quality"):
        config_from_args("nscnet", ["--preset", "quality", *everything])
    with pytest.raises(ConfigError, match="preset='best'"):
        presets.config("nscnet", "best")
    assert needs_final_clustering(NscnetConfig(k=4, k_train=8)) and not needs_final_clustering(NscnetConfig())
    with pytest.raises(ConfigError, match="k_train=2"):
        NscnetConfig(k=4, k_train=2)
