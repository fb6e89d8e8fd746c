"""Pure transforms: high-pass, pad/crop, and the image encodings (shape, range, no NaN)."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from nscnet.audio.features import encode, fit_duration, highpass, hop_length_for, mel_image, mel_power

SR = 22050


def tone(freq: float, seconds: float = 0.5, sr: int = SR) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr).astype(np.float32)


def rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(y ** 2)))


def test_highpass_removes_low_and_keeps_high_frequencies():
    low, high = tone(200), tone(4000)
    assert rms(highpass(low, sr=SR, cutoff_hz=1500)) < 0.01 * rms(low)
    assert rms(highpass(high, sr=SR, cutoff_hz=1500)) == pytest.approx(rms(high), rel=0.02)
    assert highpass(low, sr=SR, cutoff_hz=0) is low


@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_highpass_on_very_short_segments(n):
    out = highpass(np.ones(n, dtype=np.float32), sr=SR, cutoff_hz=1500)
    assert out.shape == (n,) and np.isfinite(out).all()


def test_fit_duration_pad_positions_and_crops():
    y = np.arange(1, 5, dtype=np.float32)
    assert fit_duration(y, n_samples=8, pad="end")[0].tolist() == [1, 2, 3, 4, 0, 0, 0, 0]
    assert fit_duration(y, n_samples=8, pad="start")[0].tolist() == [0, 0, 0, 0, 1, 2, 3, 4]
    assert fit_duration(y, n_samples=8, pad="center")[0].tolist() == [0, 0, 1, 2, 3, 4, 0, 0]
    long = np.arange(10, dtype=np.float32)
    assert fit_duration(long, n_samples=4, pad="end") [0].tolist() == [0, 1, 2, 3]
    assert fit_duration(long, n_samples=4, pad="start")[0].tolist() == [6, 7, 8, 9]
    assert fit_duration(long, n_samples=4, pad="center")[0].tolist() == [3, 4, 5, 6]
    assert fit_duration(long, n_samples=4)[1] is True and fit_duration(y, n_samples=8)[1] is False
    assert fit_duration(y, n_samples=4)[1] is False


@pytest.mark.parametrize("seconds, sr, frames", [(11.0, 22050, 512), (0.3, 22050, 128), (3.0, 32000, 64),
                                                 (0.05, 16000, 512), (1.234, 44100, 100)])
def test_mel_image_has_exactly_frames_columns(seconds, sr, frames):
    y = np.random.default_rng(0).normal(size=int(seconds * sr)).astype(np.float32)
    image = mel_image(y, sr=sr, n_mels=32, frames=frames, n_fft=1024)
    assert image.shape == (32, frames) and image.dtype == np.float32
    assert np.isfinite(image).all() and image.min() >= 0 and image.max() == pytest.approx(1.0)
    hop = hop_length_for(len(y), frames)
    if len(y) >= 1024:  # the derived hop alone gives `frames` columns (no padding of columns)
        assert 1 + len(y) // hop == frames


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fmin, fmax", [(0.0, 0.0), (500.0, 12000.0)])
def test_mel_power_is_librosa_melspectrogram_exactly(dtype, fmin, fmax):
    # the filter bank is made once per setting (speed); the numbers are librosa's, bit for bit
    y = np.random.default_rng(1).normal(size=4160).astype(dtype)
    for n_mels in (64, 32, 64):  # cached and uncached filter banks
        ours = mel_power(y, sr=32000, n_mels=n_mels, n_fft=512, hop_length=32, fmin=fmin, fmax=fmax)
        bare = librosa.feature.melspectrogram(y=y, sr=32000, n_fft=512, hop_length=32, n_mels=n_mels,
                                              fmin=fmin, fmax=fmax or None)
        assert ours.dtype == bare.dtype and np.array_equal(ours, bare)


def test_mel_image_puts_a_tone_in_its_band():
    image = mel_image(tone(4000, 1.0), sr=SR, n_mels=64, frames=64)
    band = np.argmin(np.abs(librosa.mel_frequencies(n_mels=64, fmax=SR / 2) - 4000))
    assert abs(int(image.mean(axis=1).argmax()) - band) <= 1


@pytest.mark.parametrize("encoding, height", [("mel", 64), ("chroma", 12), ("mfcc", 20), ("waveform", 32)])
def test_all_silent_segment_gives_a_finite_constant_image(encoding, height):
    image = encode(np.zeros(SR, dtype=np.float32), sr=SR, encoding=encoding, height=height, frames=64)
    assert image.shape == (height, 64) and np.isfinite(image).all()
    expected = 0.5 if encoding == "waveform" else 0.0  # waveform: zero amplitude is mid-grey
    assert np.all(image == expected)


@pytest.mark.parametrize("encoding, height", [("mel", 64), ("chroma", 12), ("mfcc", 20), ("waveform", 32)])
@pytest.mark.parametrize("n", [10, 500])  # shorter than n_fft = 1024
def test_segments_shorter_than_the_fft_window(encoding, height, n):
    y = np.random.default_rng(1).normal(size=n).astype(np.float32)
    image = encode(y, sr=SR, encoding=encoding, height=height, frames=64, n_fft=1024)
    assert image.shape == (height, 64) and np.isfinite(image).all()
    assert image.min() >= 0 and image.max() <= 1 and image.max() > 0


@pytest.mark.parametrize("encoding, height", [("chroma", 12), ("mfcc", 20), ("waveform", 16)])
def test_other_encodings_are_scaled_to_unit_range(encoding, height):
    y = tone(3000, 1.0) + 0.1 * np.random.default_rng(2).normal(size=SR).astype(np.float32)
    image = encode(y, sr=SR, encoding=encoding, height=height, frames=50)
    assert image.shape == (height, 50) and np.isfinite(image).all()
    assert image.min() >= 0 and image.max() <= 1 and image.max() - image.min() > 0.3


def test_waveform_image_is_the_signal_row_by_row():
    y = np.linspace(-1, 1, 8 * 16, dtype=np.float32)
    image = encode(y, sr=SR, encoding="waveform", height=8, frames=16)
    assert np.allclose(image.ravel(), (y + 1) / 2, atol=1e-5)


def test_quiet_segment_uses_its_own_dynamic_range():
    """A whisper and a shout of the same song give the same image (scaled to the peak)."""
    y = tone(3000, 0.5)
    assert np.allclose(mel_image(1e-4 * y, sr=SR, frames=32), mel_image(y, sr=SR, frames=32), atol=1e-4)


def test_unknown_encoding():
    with pytest.raises(ValueError, match="encoding='png'"):
        encode(np.zeros(10, dtype=np.float32), sr=SR, encoding="png")
