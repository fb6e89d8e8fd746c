"""Tiny image datasets with separable classes for the deep-model tests (no audio needed).

`make_dataset` writes a real dataset folder (spectrograms.npy memmap + segments.csv +
preprocess.json) through `nscnet.images.dataset.open_image_writer`; each class is a distinct pattern
(flat bands, sweeps, clicks, a harmonic stack), shifted in time and noised per image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nscnet.images.dataset import IMAGES, META, SEGMENTS, open_image_writer


def pattern(kind: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One (height, width) image in [0, 1] of class `kind` (0..5), noised and shifted in time.

    0: low flat band, 1: high flat band, 2: rising sweep, 3: falling sweep, 4: clicks
    (vertical stripes), 5: two bands (a harmonic stack).
    """
    image = rng.uniform(0.0, 0.15, size=(height, width))
    rows = np.arange(height)[:, None].astype(float)
    cols = np.arange(width)[None, :].astype(float)
    shift = rng.integers(-width // 8, width // 8 + 1)
    start, stop = width // 6 + shift, width - width // 6 + shift
    inside = (cols >= start) & (cols < stop)
    span = (cols - start) / max(stop - start, 1)              # 0..1 across the syllable
    low, high = 0.2 * height, 0.75 * height
    if kind == 0:
        shape = np.abs(rows - low) < 2
    elif kind == 1:
        shape = np.abs(rows - high) < 2
    elif kind == 2:
        shape = np.abs(rows - (low + (high - low) * span)) < 2
    elif kind == 3:
        shape = np.abs(rows - (high - (high - low) * span)) < 2
    elif kind == 4:
        shape = (np.floor(span * 8) % 2 == 0) & (rows > 0.1 * height) & (rows < 0.9 * height)
    else:
        shape = (np.abs(rows - 0.35 * height) < 1.5) | (np.abs(rows - 0.6 * height) < 1.5)
    image[shape & inside] = rng.uniform(0.7, 1.0)
    return image.astype(np.float16)


def make_dataset(path: str | Path, *, classes: int = 4, per_class: int = 24, height: int = 32,
                 width: int = 64, seed: int = 0) -> Path:
    """Write a dataset folder of classes x per_class images; label = class name, for scoring."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    kinds = rng.permutation(np.repeat(np.arange(classes), per_class))
    images = open_image_writer(path / IMAGES, len(kinds), height, width)
    rows = []
    for i, kind in enumerate(kinds):
        images[i] = pattern(int(kind), height, width, rng)
        rows.append(dict(segment_id=f"rec0_{i:04d}", recording="rec0.wav", channel=0, onset_s=float(i),
                         offset_s=float(i) + 0.5, duration_s=0.5, label=f"type{kind}", status="ok", row=i))
    images.flush()
    del images
    pd.DataFrame(rows).to_csv(path / SEGMENTS, index=False)
    (path / META).write_text(json.dumps({"n_mels": height, "frames": width, "synthetic": "fixtures_deep"}))
    return path


@pytest.fixture
def one_torch_thread():
    """torch on one CPU thread for the test (the tiny networks gain nothing from more), restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# a tiny NSCNet run on `tiny_images` (the tests of DeepCluster's levers and of pretraining)
TINY = dict(k=4, epochs=2, backbone="small_cnn", embedding_dim=32, pca_dim=8, num_workers=0, lr=1e-3,
            batch_size=16, freq_mask=4, device="cpu", seed=1, threads=1, truth=True,
            stability_runs=2)


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    """4 classes x 16 images of 32 x 64, one dataset for the module."""
    return make_dataset(tmp_path_factory.mktemp("quality") / "ds", classes=4, per_class=16, height=32, width=64)

