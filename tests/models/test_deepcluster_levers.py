"""The DeepCluster-epoch levers `head_warmup` (deepcluster.fit_head) and `backbone_lr_scale` do what
they say: real torch, tiny data, one thread."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nscnet.config import ConfigError, NscnetConfig
from nscnet.models import training, deepcluster
from nscnet.models.arcface import make_head
from nscnet.models.nscnet import build_model, run_nscnet
from nscnet.models.saved import load_model
from nscnet.runs import tracking as T
from tests.fixtures_deep import make_dataset
from tests.fixtures_resume import training_store

TINY = dict(k=4, epochs=1, epoch_length=1, backbone="small_cnn", embedding_dim=32, pca_dim=8, num_workers=0,
            lr=1e-3, batch_size=16, device="cpu", seed=5, threads=1, export=False, figures=False)


def _blobs(seed=0, k=4, per=40, dim=16):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), per)
    features = rng.normal(size=(k, dim))[labels] * 3 + rng.normal(size=(k * per, dim))
    return features.astype(np.float32), labels


@pytest.mark.parametrize("kind", ["softmax", "arcface"])
def test_fit_head_fits_a_fresh_head_to_the_labels_on_fixed_embeddings(kind):
    features, labels = _blobs()
    torch.manual_seed(0)
    head = make_head(kind, features.shape[1], 4)
    x, y = torch.from_numpy(features), torch.from_numpy(labels)
    with torch.no_grad():
        before = float(F.cross_entropy(head(x, y), y))
    kept = features.copy()
    after = deepcluster.fit_head(head, features, labels, steps=150, lr=1e-2)
    assert after < before / 2
    with torch.no_grad():
        assert (head(x).argmax(1) == y).float().mean() > 0.95
    np.testing.assert_array_equal(features, kept)   # the embeddings are read, never changed
    untouched = make_head(kind, features.shape[1], 4)
    weight = untouched.weight.detach().clone()
    assert deepcluster.fit_head(untouched, features, labels, steps=0) > 0
    torch.testing.assert_close(untouched.weight.detach(), weight)   # 0 steps: the head as it was


def test_new_fields_are_validated_and_auto_warms_the_head_only_after_pretraining():
    with pytest.raises(ConfigError, match="head_warmup=-2"):
        NscnetConfig(head_warmup=-2)
    assert deepcluster.resolve_head_warmup(NscnetConfig()).head_warmup == 0                    # the paper's loop
    assert deepcluster.resolve_head_warmup(NscnetConfig(pretrain_epochs=3)).head_warmup == 200
    assert deepcluster.resolve_head_warmup(NscnetConfig(pretrained_run="abc")).head_warmup == 200
    assert deepcluster.resolve_head_warmup(NscnetConfig(pretrain_epochs=3, head_warmup=0)).head_warmup == 0
    with pytest.raises(ConfigError, match="backbone_lr_scale=0"):
        NscnetConfig(backbone_lr_scale=0.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with training_store(tmp_path_factory.mktemp("levers")) as root:
        yield root


def test_a_run_with_a_frozen_network_scale_trains_only_the_head_and_logs_the_warmup(store):
    """backbone_lr_scale 1e-9: the network's weights stay where they started (BatchNorm's
    running statistics are not weights); head_warmup: the fitted head's loss is logged."""
    data = make_dataset(store / "data", classes=4, per_class=12, seed=2)
    cfg = NscnetConfig(data=str(data), truth=True, head_warmup=60, backbone_lr_scale=1e-9, **TINY)
    final = run_nscnet(cfg)
    warm = T.metric_history(final["run_id"], "head_warmup_loss")
    assert [step for step, _ in warm] == [0]
    assert warm[0][1] < np.log(4)              # below the loss of a head that knows nothing
    training.seed_everything(cfg.seed)         # the run's start: the same seed, the same network
    start = build_model(cfg).state_dict()
    trained = load_model(final["run_id"]).weights
    weights = [name for name, value in start.items() if value.is_floating_point() and "running" not in name]
    assert weights
    for name in weights:
        torch.testing.assert_close(trained[name], start[name], atol=1e-6, rtol=0)
    # the same run at the full lr moves the network
    moved = load_model(run_nscnet(NscnetConfig(data=str(data), truth=True, **TINY))["run_id"]).weights
    assert any(not torch.allclose(moved[name], start[name], atol=1e-4) for name in weights)
