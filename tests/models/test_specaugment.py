"""SpecAugment: widths scale with the image, masks stay in bounds, seeded draws repeat."""

from __future__ import annotations

import torch

from nscnet.models.specaugment import SpecAugment, scaled, time_warp


def test_widths_given_at_512_frames_scale_with_width():
    assert scaled(60, 512) == 60 and scaled(60, 128) == 15 and scaled(60, 64) == 8


def test_masks_cover_at_most_their_widths_and_repeat_with_the_seed():
    images = torch.ones(16, 1, 32, 128)
    augment = SpecAugment(time_warp=0, freq_mask=5, freq_masks=1, time_mask=40, time_masks=2)
    out = augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    masked_rows = (out == 0).all(dim=3).sum(dim=2).squeeze(1)   # fully masked rows per image
    masked_cols = (out == 0).all(dim=2).sum(dim=2).squeeze(1)   # fully masked columns per image
    assert int(masked_rows.max()) <= 5
    assert int(masked_cols.max()) <= 2 * scaled(40, 128)
    assert int(masked_cols.sum()) > 0 and int(masked_rows.sum()) > 0
    again = augment(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    other = augment(images, torch.Generator().manual_seed(1))
    assert not torch.equal(out, other)


def test_time_warp_moves_content_in_time_only_and_keeps_edges():
    images = torch.zeros(8, 1, 16, 128)
    images[:, :, 5, :] = 1.0                                # a horizontal line stays a line
    ramp = torch.linspace(0, 1, 128)
    ramps = ramp.expand(8, 1, 16, 128).clone()
    warped_line = time_warp(images, 15, torch.Generator().manual_seed(0))
    assert torch.allclose(warped_line[:, :, 5, :], torch.ones(8, 1, 128), atol=1e-5)
    assert float(warped_line[:, :, 4, :].abs().max()) < 1e-5
    warped = time_warp(ramps, 15, torch.Generator().manual_seed(0))
    assert torch.allclose(warped[..., 0], ramps[..., 0], atol=1e-5)        # the ends stay put
    assert torch.allclose(warped[..., -1], ramps[..., -1], atol=1e-5)
    assert (warped[..., 1:] - warped[..., :-1] >= -1e-6).all()             # still monotone in time
    assert not torch.allclose(warped, ramps, atol=1e-3)                    # but moved


def test_batch_on_its_own_dtype_and_tiny_widths_are_left_alone():
    images = torch.rand(2, 1, 8, 10)
    assert torch.equal(time_warp(images, 60, torch.Generator().manual_seed(0)), images)
