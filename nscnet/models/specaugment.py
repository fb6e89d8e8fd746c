"""SpecAugment on batches of spectrogram images (Park et al. 2019): time warp, frequency and
time masks. Batched torch, runs on the batch's device; randomness from a torch.Generator so an
epoch's augmentations repeat exactly with the same seed.

Widths are given at the paper's 512 frames and scaled with the image width (W=60 and T=60 at
512 frames become 15 at 128 frames); the frequency mask width F is in mel bands.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

REFERENCE_FRAMES = 512


def scaled(width_at_512: int, frames: int) -> int:
    """A width given at 512 frames, scaled to an image of `frames` frames (at least 0)."""
    return max(0, int(round(width_at_512 * frames / REFERENCE_FRAMES)))


def _uniform(low: torch.Tensor | float, high: torch.Tensor | float, size: int, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(size, generator=generator)


def time_warp(images: torch.Tensor, warp: int, generator: torch.Generator) -> torch.Tensor:
    """Warp the time axis piecewise linearly: a random point c moves to c + w, |w| <= warp.

    images: (B, C, H, W) -> (B, C, H, W). Columns left of c are stretched or squeezed to
    [0, c + w), columns right of it to [c + w, W); bilinear resampling along time only.
    """
    batch, _, height, width = images.shape
    if warp <= 0 or width <= 2 * warp + 1:
        return images
    centre = _uniform(warp, width - 1 - warp, batch, generator)                # (B,)
    dest = (centre + _uniform(-warp, warp, batch, generator)).clamp(1.0, width - 2.0)  # (B,)
    t = torch.arange(width, dtype=torch.float32)[None, :]                      # (1, W)
    c, d = centre[:, None], dest[:, None]
    # source column of every output column t: invert the map c -> d
    source = torch.where(t < d, t * c / d, c + (t - d) * (width - 1 - c) / (width - 1 - d))
    grid_x = (2.0 * source / (width - 1) - 1.0)[:, None, :].expand(batch, height, width)
    grid_y = torch.linspace(-1.0, 1.0, height)[None, :, None].expand(batch, height, width)
    grid = torch.stack([grid_x, grid_y], dim=-1).to(images.device, images.dtype)  # (B, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _band_mask(size: int, length: int, max_width: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """(B, size) bool: `count` random bands of width U[0, max_width] per row."""
    mask = torch.zeros(length, size, dtype=torch.bool)
    max_width = min(max_width, size)
    if max_width <= 0:
        return mask
    positions = torch.arange(size)[None, :]
    for _ in range(count):
        widths = torch.randint(0, max_width + 1, (length,), generator=generator)
        starts = (torch.rand(length, generator=generator) * (size - widths + 1)).long()
        mask |= (positions >= starts[:, None]) & (positions < (starts + widths)[:, None])
    return mask


@dataclass(frozen=True)
class SpecAugment:
    """Callable augmentation of (B, C, H, W) batches.

    time_warp, time_mask: widths at 512 frames (scaled to the batch's width);
    freq_mask: width in rows; freq_masks, time_masks: masks per image. Masked cells get `fill`.
    """

    time_warp: int = 60
    freq_mask: int = 15
    freq_masks: int = 1
    time_mask: int = 60
    time_masks: int = 2
    fill: float = 0.0

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch, _, height, width = images.shape
        out = time_warp(images, scaled(self.time_warp, width), generator)
        freq = _band_mask(height, batch, self.freq_mask, self.freq_masks, generator)              # (B, H)
        time = _band_mask(width, batch, scaled(self.time_mask, width), self.time_masks, generator)  # (B, W)
        mask = (freq[:, None, :, None] | time[:, None, None, :]).to(out.device)
        return out.masked_fill(mask, self.fill)
