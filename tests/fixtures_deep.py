"""Tiny image datasets with separable classes for the deep-model tests (no audio needed).

`make_dataset` writes a real dataset folder (spectrograms.npy memmap + segments.csv +
preprocess.json) through `nscnet.dataset.open_image_writer`; each class is a distinct pattern
(a band at its own height with its own slope), shifted in time and noised per image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from nscnet.dataset import IMAGES, META, SEGMENTS, open_image_writer


def pattern(kind: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One (height, width) image in [0, 1] of class `kind`: a sloped band plus noise."""
    image = rng.uniform(0.0, 0.15, size=(height, width))
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    base = (kind * 5 + 4) % (height - 6) + 3
    slope = ((kind % 3) - 1) * 0.15 * height / width
    shift = rng.integers(-width // 8, width // 8 + 1)
    start, stop = width // 6 + shift, width - width // 6 + shift
    centre = base + slope * (cols - width / 2)
    band = (np.abs(rows - centre) < 1.5 + (kind // 3)) & (cols >= start) & (cols < stop)
    image[band] = rng.uniform(0.7, 1.0)
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
