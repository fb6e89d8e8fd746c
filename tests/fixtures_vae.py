"""Tiny synthetic image datasets for the VAENet tests, written through nscnet.images.dataset.

Each song type is a frequency contour (a bright line of its own start row and slope) on a dim
noisy background, so the types are separable and the images look like spectrogram syllables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nscnet.images.dataset import IMAGES, SEGMENT_COLUMNS, SEGMENTS, open_image_writer


def contour_images(n: int, height: int, width: int, *, types: int = 3, noise: float = 0.08, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, height, width) float32 in [0, 1], type index (n,)), each type a contour."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % types
    rng.shuffle(labels)
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    images = np.empty((n, height, width), dtype=np.float32)
    for i, t in enumerate(labels):
        start = height * (0.2 + 0.6 * t / max(types - 1, 1))
        slope = (-1) ** t * 0.25 * height / width
        onset = rng.integers(0, width // 8 + 1)
        centre = start + slope * (cols - onset) + rng.normal(0, 0.5)
        line = (np.abs(rows - centre) < 1.5) * (cols >= onset) * (cols < onset + 0.75 * width)
        images[i] = np.clip(0.9 * line + rng.uniform(0, noise, size=(height, width)), 0, 1)
    return images, labels


def write_dataset(path: Path, n: int = 48, height: int = 32, width: int = 64, *, types: int = 3, noise: float = 0.08,
                  seed: int = 0) -> Path:
    """A dataset folder like `preprocess` writes, with label text "t0", "t1", ... per segment."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    images, labels = contour_images(n, height, width, types=types, noise=noise, seed=seed)
    memmap = open_image_writer(path / IMAGES, n, height, width)
    memmap[:] = images.astype(np.float16)
    memmap.flush()
    del memmap
    segments = pd.DataFrame({
        "segment_id": [f"rec{i // 16}_{i:04d}" for i in range(n)],
        "recording": [f"rec{i // 16}.wav" for i in range(n)],
        "channel": 0,
        "onset_s": [float(i % 16) for i in range(n)],
        "offset_s": [float(i % 16) + 0.5 for i in range(n)],
        "duration_s": 0.5,
        "label": [f"t{t}" for t in labels],
        "status": "ok",
        "row": np.arange(n),
    })[SEGMENT_COLUMNS]
    segments.to_csv(path / SEGMENTS, index=False)
    return path
