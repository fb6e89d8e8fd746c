"""Feature extractors registered by name, and the embedding network built on them.

`efficientnet_b0`: torchvision EfficientNet-B0 `features` (weights=None: nothing is
downloaded; `pretrained_weights` loads a user's state dict). `small_cnn`: four conv blocks,
cheap enough for CPU tests and demos. Add one with `@register("name")` on a function
`(in_channels) -> (module, out_channels)`. `EmbedderEnsemble`: several embedding networks side
by side (NSCNet's `ensemble`).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from nscnet.config import ConfigError, DataError
from nscnet.models.specaugment import scaled

log = logging.getLogger(__name__)

BACKBONES: dict[str, Callable[[int], tuple[nn.Module, int]]] = {}


def register(name: str):
    def wrap(builder):
        BACKBONES[name] = builder
        return builder
    return wrap


@register("efficientnet_b0")
def efficientnet_b0(in_channels: int = 3) -> tuple[nn.Module, int]:
    features = torchvision.models.efficientnet_b0(weights=None).features
    if in_channels != 3:  # adapt the stem convolution (3 -> in_channels input channels)
        stem = features[0][0]
        features[0][0] = nn.Conv2d(in_channels, stem.out_channels, stem.kernel_size, stem.stride,
                                   stem.padding, bias=False)
    return features, 1280


@register("small_cnn")
def small_cnn(in_channels: int = 3) -> tuple[nn.Module, int]:
    layers, width = [], in_channels
    for out in (16, 32, 64, 64):
        layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
        width = out
    return nn.Sequential(*layers), width


@register("vae_encoder")
def vae_encoder(in_channels: int = 1) -> tuple[nn.Module, int]:
    """VAENet's encoder at its default widths: five stride-2 conv-BN-LeakyReLU blocks
    (`nscnet.models.vae_model`), so that a `pretrain` run with `--backbone vae_encoder
    --input_mode adapt` gives VAENet its starting weights (`vaenet --pretrained_run`)."""
    from nscnet.config import VaenetConfig
    from nscnet.models.vae_model import encoder_blocks

    filters = VaenetConfig().filters
    return encoder_blocks(filters, in_channels=in_channels), filters[-1]


class Embedder(nn.Module):
    """(B, 1, H, W) images -> (B, embedding_dim) embeddings.

    input_mode `repeat` copies the one channel to three (the backbone as published); `adapt`
    gives the backbone a one-channel first convolution. Then global max (or avg) pooling,
    a linear layer to embedding_dim and LeakyReLU(0.01).

    edge_mask: frames at 512 frames (scaled with the image width) silenced (set to 0) at each end
    of every image before the backbone sees it: the neighbouring sounds that a centred cut takes in
    (`embed_edge_mask`; 0 = the whole image). `unmasked()` lifts it for contrastive training,
    whose views draw their own edge masks.
    """

    def __init__(self, backbone: str = "efficientnet_b0", *, embedding_dim: int = 512, pooling: str = "max",
                 input_mode: str = "repeat", edge_mask: int = 0):
        super().__init__()
        if backbone not in BACKBONES:
            raise ConfigError(f"backbone={backbone!r} is not one of {', '.join(sorted(BACKBONES))}")
        if pooling not in ("max", "avg") or input_mode not in ("repeat", "adapt"):
            raise ConfigError(f"pooling={pooling!r} / input_mode={input_mode!r}: pooling is max or avg, "
                              "input_mode repeat or adapt")
        self.input_mode = input_mode
        # what rebuilds it (nscnet.models.saved.build_network)
        self.spec = {"kind": "embedder", "backbone": backbone, "embedding_dim": int(embedding_dim),
                     "pooling": pooling, "input_mode": input_mode, "edge_mask": int(edge_mask)}
        self.edge_mask = int(edge_mask)
        self.out_dim = int(embedding_dim)  # width of what forward returns
        self.features, width = BACKBONES[backbone](1 if input_mode == "adapt" else 3)
        self.pool = nn.AdaptiveMaxPool2d(1) if pooling == "max" else nn.AdaptiveAvgPool2d(1)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(width, embedding_dim), nn.LeakyReLU(0.01))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        edge = scaled(self.edge_mask, images.shape[-1]) if self.edge_mask else 0
        if edge:
            images = silence_edges(images, edge)
        if self.input_mode == "repeat":
            images = images.expand(-1, 3, -1, -1)
        return self.embed(self.pool(self.features(images)))

    @contextlib.contextmanager
    def unmasked(self) -> Iterator[None]:
        """The whole image is embedded inside the block (contrastive training), edge_mask after."""
        kept, self.edge_mask = self.edge_mask, 0
        try:
            yield
        finally:
            self.edge_mask = kept


class EmbedderEnsemble(nn.Module):
    """Several `Embedder`s side by side: (B, 1, H, W) -> (B, members x embedding_dim), each
    member's embedding L2-normalised, so every member weighs the same in the distances
    (NSCNet's `ensemble`: members trained contrastively from their own seeds; docs/RESULTS.md)."""

    def __init__(self, members: list[Embedder]):
        super().__init__()
        if len(members) < 2:
            raise ConfigError(f"an ensemble needs at least 2 networks, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.spec = {"kind": "ensemble", "members": [member.spec for member in members]}
        self.out_dim = sum(member.out_dim for member in members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.normalize(member(images), dim=1) for member in self.members], dim=1)

    @contextlib.contextmanager
    def unmasked(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for member in self.members:
                stack.enter_context(member.unmasked())
            yield


def silence_edges(images: torch.Tensor, frames: int) -> torch.Tensor:
    """images (..., W) with `frames` frames at each end set to 0 (a copy; at most half of W each side)."""
    frames = min(frames, images.shape[-1] // 2)
    keep = torch.ones(images.shape[-1], dtype=images.dtype, device=images.device)
    keep[:frames] = 0
    keep[images.shape[-1] - frames:] = 0
    return images * keep


def load_backbone_weights(model: Embedder, path: str | Path) -> None:
    """Load a user's state dict into the backbone (`features.` prefixes accepted or not)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pretrained_weights={str(path)!r}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    if not set(state) & set(model.features.state_dict()):
        raise DataError(f"pretrained_weights={str(path)!r}: no tensor matches the backbone")
    try:
        missing, _ = model.features.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        raise DataError(f"pretrained_weights={str(path)!r} does not fit the backbone: {str(exc)[:300]}") from None
    if missing:
        log.warning("pretrained_weights: %d backbone tensors not in %s keep their initial values", len(missing), path)
