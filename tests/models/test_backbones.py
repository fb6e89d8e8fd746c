"""Backbone registry and the embedding network: shapes, input modes, user weights."""

from __future__ import annotations

import pytest
import torch

from nscnet.config import ConfigError, DataError
from nscnet.models.backbones import BACKBONES, Embedder, load_backbone_weights


@pytest.mark.parametrize("backbone", ["small_cnn", "efficientnet_b0"])
@pytest.mark.parametrize("input_mode", ["repeat", "adapt"])
def test_embedder_maps_one_channel_images_to_leaky_relu_embeddings(backbone, input_mode):
    torch.manual_seed(0)
    model = Embedder(backbone, embedding_dim=24, pooling="max", input_mode=input_mode).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 1, 32, 64))
    assert out.shape == (3, 24) and torch.isfinite(out).all()
    last = model.embed[-1]
    assert isinstance(last, torch.nn.LeakyReLU) and last.negative_slope == 0.01
    stem = next(m for m in model.features.modules() if isinstance(m, torch.nn.Conv2d))
    assert stem.in_channels == (1 if input_mode == "adapt" else 3)


def test_unknown_backbone_names_the_known_ones():
    with pytest.raises(ConfigError, match="small_cnn"):
        Embedder("resnet9000")
    assert {"efficientnet_b0", "small_cnn"} <= set(BACKBONES)


def test_pretrained_weights_load_into_the_backbone(tmp_path):
    torch.manual_seed(1)
    source = Embedder("small_cnn", embedding_dim=8)
    torch.save(source.features.state_dict(), tmp_path / "weights.pt")
    target = Embedder("small_cnn", embedding_dim=8)
    load_backbone_weights(target, tmp_path / "weights.pt")
    for a, b in zip(source.features.state_dict().values(), target.features.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(DataError, match="no such file"):
        load_backbone_weights(target, tmp_path / "missing.pt")
    torch.save({"unrelated.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="no tensor matches"):
        load_backbone_weights(target, tmp_path / "other.pt")
