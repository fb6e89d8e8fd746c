"""Reusable audio fixtures: a small synthetic recording set and its preprocessed dataset.

Import them into a test module with
    from tests.fixtures_audio import synthetic_audio, synthetic_dataset  # noqa: F401
`synthetic_dataset` is a dataset folder (read it with `nscnet.images.dataset.read_dataset`) of 120
songs of 6 types (Zipf s = 1), images 64 x 64 (3 s per image), made once per test session
without MLflow. Its labels are the song types: PCA + k-means (no whitening) separates them.
`make_synthetic_dataset(root, ...)` builds another size when a test needs one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nscnet.audio.synth import write_synthetic
from nscnet.config import PreprocessConfig, SynthConfig
from nscnet.images.preprocess import preprocess

SYNTH = dict(types=6, songs=120, recordings=2, seed=0)
IMAGES = dict(duration_s=3.0, n_mels=64, frames=64)


def make_synthetic_dataset(root: Path, *, synth: dict | None = None, images: dict | None = None) -> Path:
    """Write synthetic recordings into root/audio and preprocess them into root/dataset."""
    audio, dataset = Path(root) / "audio", Path(root) / "dataset"
    write_synthetic(SynthConfig(out=str(audio), **{**SYNTH, **(synth or {})}))
    preprocess(PreprocessConfig(audio=str(audio), out=str(dataset), **{**IMAGES, **(images or {})}))
    return dataset


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """Path of a small synthetic dataset folder (120 songs, 6 types, images 64 x 64)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def synthetic_audio(synthetic_dataset) -> Path:
    """The folder of the recordings and Audacity tracks behind `synthetic_dataset`."""
    return synthetic_dataset.parent / "audio"
