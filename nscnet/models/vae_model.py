"""The VAENet network and its loss (pure torch, no MLflow).

`ConvVAE` encodes a one-channel image (B, 1, H, W) with five 3x3 stride-2 convolutions (batch
norm, LeakyReLU), then one more strided convolution to the bottleneck: (256, 1, 8) for a
64 x 512 input with the default widths. The bottleneck is flattened, passed through a dense
layer and split into the latent mean and log-variance. The decoder mirrors the encoder with
transposed convolutions and returns logits; `torch.sigmoid(logits)` is the reconstruction.

Every spatial size is derived from the input size, so 64 x 128 or 32 x 64 images work too
(the last strided convolution only halves a dimension that is at least 2 by then).

`vae_loss` gives the reconstruction loss (binary cross-entropy or squared error, summed over
pixels) and the KL divergence to N(0, I) (summed over latent dimensions), both averaged over
the batch; `kl_weight` gives beta at an epoch during a linear warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NEGATIVE_SLOPE = 0.01


def _conv_out(size: int) -> int:
    """Output length of a 3x3, stride-2, padding-1 convolution: ceil(size / 2)."""
    return (size + 1) // 2


def _conv_block(cin: int, cout: int, **conv) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, bias=False, **conv), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True))


def _deconv_block(cin: int, cout: int, **conv) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, bias=False, **conv), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True))


def encoder_blocks(filters: tuple[int, ...], *, in_channels: int = 1, residual: bool = False) -> nn.Sequential:
    """The five stride-2 3x3 conv-BN-LeakyReLU blocks of the encoder (residual blocks after
    each when asked): (B, in_channels, H, W) -> (B, filters[-1], ~H/32, ~W/32)."""
    blocks: list[nn.Module] = []
    for cin, cout in zip((in_channels, *filters[:-1]), filters):
        blocks.append(_conv_block(cin, cout, kernel_size=3, stride=2, padding=1))
        if residual:
            blocks.append(ResidualBlock(cout))
    return nn.Sequential(*blocks)


class ResidualBlock(nn.Module):
    """x + conv-bn-lrelu-conv-bn(x), then LeakyReLU: shape-preserving (B, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
            nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
        )
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


@dataclass(frozen=True)
class VAEShapes:
    """Spatial sizes along the encoder: `sizes[0]` is the input, `sizes[5]` after the five
    stride-2 convolutions, `bottleneck` after the last strided convolution of kernel `last`."""

    sizes: tuple[tuple[int, int], ...]
    last: tuple[int, int]
    bottleneck: tuple[int, int]


def vae_shapes(height: int, width: int, n_convs: int = 5) -> VAEShapes:
    """Encoder shapes for an input of (height, width): 64 x 512 -> bottleneck (1, 8)."""
    if height < 1 or width < 1:
        raise ValueError(f"image size {height} x {width} must be positive")
    sizes = [(height, width)]
    for _ in range(n_convs):
        h, w = sizes[-1]
        sizes.append((_conv_out(h), _conv_out(w)))
    h, w = sizes[-1]
    # kernel = stride = 2 where there is something left to halve, 1 otherwise
    last = (2 if h >= 2 else 1, 2 if w >= 2 else 1)
    return VAEShapes(tuple(sizes), last, (h // last[0], w // last[1]))


class ConvVAE(nn.Module):
    """Convolutional VAE for (B, 1, H, W) images with values in [0, 1].

    forward(x) -> (logits (B, 1, H, W), mu (B, latent_dim), logvar (B, latent_dim)).
    """

    def __init__(self, image_shape: tuple[int, int], *, latent_dim: int = 64,
                 filters: tuple[int, ...] = (32, 64, 128, 256, 256), dense_units: int = 512,
                 residual: bool = False):
        super().__init__()
        if len(filters) != 5:
            raise ValueError(f"filters={filters!r} must give five widths, one per stride-2 convolution")
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.latent_dim = latent_dim
        # what rebuilds it (nscnet.models.saved.build_network)
        self.spec = {"kind": "conv_vae", "image_shape": list(self.image_shape), "latent_dim": int(latent_dim),
                     "filters": [int(f) for f in filters], "dense_units": int(dense_units), "residual": bool(residual)}
        self.shapes = vae_shapes(*self.image_shape)
        widths = (1, *filters)
        bottleneck_channels = filters[-1]
        h, w = self.shapes.bottleneck
        self.flat_dim = bottleneck_channels * h * w

        encoder = list(encoder_blocks(filters, residual=residual))
        encoder.append(_conv_block(filters[-1], bottleneck_channels,
                                   kernel_size=self.shapes.last, stride=self.shapes.last))
        self.encoder = nn.Sequential(*encoder, nn.Flatten())
        self.dense = nn.Sequential(nn.Linear(self.flat_dim, dense_units), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True))
        self.to_mu = nn.Linear(dense_units, latent_dim)
        self.to_logvar = nn.Linear(dense_units, latent_dim)

        self.from_latent = nn.Sequential(
            nn.Linear(latent_dim, dense_units), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
            nn.Linear(dense_units, self.flat_dim), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True),
            nn.Unflatten(1, (bottleneck_channels, h, w)),
        )
        decoder: list[nn.Module] = [_deconv_block(bottleneck_channels, filters[-1],
                                                  kernel_size=self.shapes.last, stride=self.shapes.last,
                                                  output_padding=self._last_padding())]
        sizes = self.shapes.sizes  # decoder walks them backwards: sizes[5] -> sizes[0]
        for level in range(5, 0, -1):
            cin, cout = widths[level], widths[level - 1]
            padding = tuple(t - (2 * s - 1) for t, s in zip(sizes[level - 1], sizes[level]))
            if level > 1:
                decoder.append(_deconv_block(cin, cout, kernel_size=3, stride=2, padding=1, output_padding=padding))
                if residual:
                    decoder.append(ResidualBlock(cout))
            else:  # the output layer: plain logits, the sigmoid lives in the loss / reconstruct()
                decoder.append(nn.ConvTranspose2d(cin, cout, kernel_size=3, stride=2, padding=1,
                                                  output_padding=padding))
        self.decoder = nn.Sequential(*decoder)

    def _last_padding(self) -> tuple[int, int]:
        # a kernel-k stride-k transposed convolution gives k * size; pad up to the odd remainder
        (h5, w5), (kh, kw), (h6, w6) = self.shapes.sizes[-1], self.shapes.last, self.shapes.bottleneck
        return h5 - kh * h6, w5 - kw * w6

    @torch.no_grad()
    def init_output_bias(self, mean_pixel: float) -> None:
        """Start the decoder at the data's mean brightness (output bias = logit(mean)), so
        the first epochs learn structure instead of the background level."""
        p = min(max(float(mean_pixel), 1e-4), 1 - 1e-4)
        self.decoder[-1].bias.fill_(math.log(p / (1 - p)))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, H, W) -> mu, logvar, each (B, latent_dim)."""
        hidden = self.dense(self.encoder(x))
        return self.to_mu(hidden), self.to_logvar(hidden)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> logits (B, 1, H, W)."""
        return self.decoder(self.from_latent(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        if self.training:  # reparameterisation trick; the mean alone at evaluation
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction in [0, 1] from the latent mean: (B, 1, H, W)."""
        mu, _ = self.encode(x)
        return torch.sigmoid(self.decode(mu))


def vae_loss(logits: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, *,
             recon: str = "bce", beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The negative ELBO with a beta-weighted KL term, per image (batch mean).

    logits, target: (B, 1, H, W), target in [0, 1]; mu, logvar: (B, latent_dim).
    Returns (total, reconstruction, kl); total = reconstruction + beta * kl. Computed in
    float32 so mixed precision cannot overflow the pixel sums.
    """
    logits, target, mu, logvar = logits.float(), target.float(), mu.float(), logvar.float()
    if recon == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elif recon == "mse":
        per_pixel = (torch.sigmoid(logits) - target) ** 2
    else:
        raise ValueError(f"recon={recon!r} is not one of bce, mse")
    batch = target.shape[0]
    reconstruction = per_pixel.sum() / batch
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / batch
    return reconstruction + beta * kl, reconstruction, kl


def kl_weight(epoch: int, *, beta: float, warmup_epochs: int) -> float:
    """beta at 0-based `epoch`: rises linearly from beta / warmup_epochs to beta, then stays."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, (epoch + 1) / warmup_epochs)


def count_parameters(model: nn.Module) -> int:
    return int(sum(math.prod(p.shape) for p in model.parameters()))
