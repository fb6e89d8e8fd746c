"""Test datasets for the clustering core: image blobs of known classes, and the real syllables.

`make_blob_dataset` writes a real dataset folder (spectrograms.npy through
`nscnet.images.dataset.open_image_writer`, segments.csv) whose images are noisy copies of a few
random prototypes, so the right clustering is known. `preprocess_syllables` builds the
Bengalese finch syllable dataset with the project's own `preprocess`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from nscnet.images.dataset import IMAGES, META, SEGMENTS, SEGMENT_COLUMNS, open_image_writer


def make_blob_dataset(path: Path, *, classes: int = 4, per_class: int = 30, height: int = 8, width: int = 16,
                      noise: float = 0.05, seed: int = 0, recordings: int = 2, identical: bool = False,
                      labels: bool = True, skipped: int = 0) -> Path:
    """A dataset folder of classes x per_class images (height, width); label = class name.

    identical: every image the same. labels=False: empty label column. skipped: extra rows
    with status 'too_short' and no image.
    """
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    n = classes * per_class
    prototypes = rng.uniform(0.1, 0.9, size=(classes, height, width))
    truth = np.repeat(np.arange(classes), per_class)
    rng.shuffle(truth)
    images = open_image_writer(path / IMAGES, n, height, width)
    if identical:
        images[:] = 0.5
    else:
        images[:] = np.clip(prototypes[truth] + rng.normal(0, noise, size=(n, height, width)), 0, 1)
    images.flush()
    del images
    recording = np.array([f"site {i % recordings}/rec_{i % recordings}.wav" for i in range(n)])
    onset = np.arange(n) // recordings * 0.5
    rows = pd.DataFrame({
        "segment_id": [f"s{i:04d}" for i in range(n)], "recording": recording, "channel": 0,
        "onset_s": onset, "offset_s": onset + 0.3, "duration_s": 0.3,
        "label": [f"type{t}" for t in truth] if labels else "", "status": "ok", "row": np.arange(n),
    })
    if skipped:
        extra = rows.iloc[:skipped].copy()
        extra["segment_id"] = [f"x{i:04d}" for i in range(skipped)]
        extra["onset_s"] += 0.35
        extra["offset_s"] = extra["onset_s"] + 0.01
        extra["status"], extra["row"] = "too_short", -1
        rows = pd.concat([rows, extra], ignore_index=True)
    rows[SEGMENT_COLUMNS].to_csv(path / SEGMENTS, index=False)
    (path / META).write_text(json.dumps({"synthetic": "blobs", "seed": seed}))
    return path



def preprocess_syllables(data: Path, out: Path, *, workers: int = 2) -> Path:
    """The Bengalese finch syllables as a dataset with `nscnet.images.preprocess` (cached by its hash).

    The settings of the issue's reference figures: 64 x 128 log-mel images of each syllable,
    centred and padded or cropped to 0.13 s (about the 95th percentile of durations), 500 Hz
    high-pass, n_fft 512, 32 kHz.
    """
    from nscnet.config import PreprocessConfig
    from nscnet.images.preprocess import preprocess

    cfg = PreprocessConfig(audio=str(data / "recordings"), labels=str(data / "syllables"), out=str(out),
                           duration_s=0.13, pad="center", highpass_hz=500.0, sample_rate=32000,
                           n_mels=64, frames=128, n_fft=512, workers=workers)
    return Path(preprocess(cfg).path)
