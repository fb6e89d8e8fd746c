"""Pure transforms of one segment: high-pass filter, pad/crop to a fixed duration, and the
image encodings (log-mel, chroma, MFCC, raw waveform), each (height, frames) float32 in [0, 1].

Images are never NaN or -inf: an all-silent segment gives an all-zero image, and segments
shorter than the FFT window are zero-padded to it first.

>>> y = np.random.default_rng(0).normal(size=22050).astype(np.float32)
>>> encode(y, sr=22050, encoding="mel", height=64, frames=128).shape
(64, 128)
"""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np
from scipy import signal

SILENCE = 1e-20  # peak power at or below which a segment counts as silent
AMIN = 1e-10  # floor of the power relative to the segment's peak (-100 dB, below any top_db)


@lru_cache(maxsize=32)
def _butter_highpass(cutoff_hz: float, sr: int, order: int) -> np.ndarray:
    return signal.butter(order, cutoff_hz, btype="highpass", fs=sr, output="sos")


def highpass(y: np.ndarray, *, sr: int, cutoff_hz: float, order: int = 5) -> np.ndarray:
    """Zero-phase Butterworth high-pass (scipy `sosfiltfilt`); (n,) -> (n,) float32.

    cutoff_hz <= 0 returns y unchanged. Signals shorter than the filter's padding are
    filtered with a shorter pad instead of failing.
    """
    if cutoff_hz <= 0 or len(y) == 0:
        return y
    sos = _butter_highpass(float(cutoff_hz), int(sr), int(order))
    default_pad = 3 * (2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum()))
    padlen = min(default_pad, len(y) - 1)
    return signal.sosfiltfilt(sos, y, padlen=max(padlen, 0)).astype(np.float32)


def fit_duration(y: np.ndarray, *, n_samples: int, pad: str = "end") -> tuple[np.ndarray, bool]:
    """Zero-pad or crop (n,) to (n_samples,); returns (y_fixed, cropped).

    pad: where the zeros go: `end` (segment first), `center`, `start` (segment last). A crop
    keeps the matching part: the beginning (`end`), the middle (`center`) or the end (`start`).
    """
    n = len(y)
    if n > n_samples:
        start = {"end": 0, "center": (n - n_samples) // 2, "start": n - n_samples}[pad]
        return y[start:start + n_samples], True
    out = np.zeros(n_samples, dtype=np.float32)
    start = {"end": 0, "center": (n_samples - n) // 2, "start": n_samples - n}[pad]
    out[start:start + n] = y
    return out, False


def hop_length_for(n_samples: int, frames: int) -> int:
    """Hop so that a centred STFT of n_samples has `frames` columns (1 + n // hop = frames)."""
    return max(1, n_samples // max(frames - 1, 1))


def _fix_columns(image: np.ndarray, frames: int) -> np.ndarray:
    """Crop or zero-pad the time axis to exactly `frames` columns."""
    if image.shape[1] >= frames:
        return image[:, :frames]
    return np.pad(image, ((0, 0), (0, frames - image.shape[1])))


def _min_length(y: np.ndarray, n_fft: int) -> np.ndarray:
    return np.pad(y, (0, n_fft - len(y))) if len(y) < n_fft else y


def db_image(power: np.ndarray, *, top_db: float) -> np.ndarray:
    """Power spectrogram (h, w) -> dB relative to its maximum, scaled from [-top_db, 0] to [0, 1].

    All-silent input gives zeros (not ones, not NaN).
    """
    peak = float(power.max()) if power.size else 0.0
    if not np.isfinite(peak) or peak <= SILENCE:
        return np.zeros(power.shape, dtype=np.float32)
    # relative to the peak first, so a quiet recording keeps its full dynamic range
    db = librosa.power_to_db(power / peak, ref=1.0, amin=AMIN, top_db=top_db)
    return np.clip((db + top_db) / top_db, 0.0, 1.0).astype(np.float32)


@lru_cache(maxsize=32)
def mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa's mel filter bank (n_mels, 1 + n_fft // 2), made once per setting: building it is
    about a third of `librosa.feature.melspectrogram`'s time on a 0.13 s syllable, which builds it
    on every call."""
    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax or None)
    basis.flags.writeable = False
    return basis


def mel_power(y: np.ndarray, *, sr: int, n_mels: int, n_fft: int, hop_length: int, fmin: float = 0.0,
              fmax: float = 0.0) -> np.ndarray:
    """Exactly `librosa.feature.melspectrogram(y=y, ..., power=2.0)` (the same STFT, filter bank
    and einsum), with the filter bank made once (`mel_basis`)."""
    power = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length)) ** 2
    return np.einsum("...ft,mf->...mt", power, mel_basis(int(sr), int(n_fft), int(n_mels), float(fmin),
                                                          float(fmax)), optimize=True)


def mel_image(y: np.ndarray, *, sr: int, n_mels: int = 64, frames: int = 512, n_fft: int = 1024,
              fmin: float = 0.0, fmax: float = 0.0, top_db: float = 80.0) -> np.ndarray:
    """Log-mel image (n_mels, frames) in [0, 1]; the hop is derived from len(y) and `frames`."""
    y = _min_length(y, n_fft)
    power = mel_power(y, sr=sr, n_mels=n_mels, n_fft=n_fft, hop_length=hop_length_for(len(y), frames),
                      fmin=fmin, fmax=fmax)
    return _fix_columns(db_image(power, top_db=top_db), frames)


def chroma_image(y: np.ndarray, *, sr: int, n_chroma: int = 12, frames: int = 512, n_fft: int = 1024) -> np.ndarray:
    """Chromagram (n_chroma, frames) in [0, 1] (each frame scaled to its loudest bin; silence -> 0)."""
    y = _min_length(y, n_fft)
    power = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length_for(len(y), frames))) ** 2
    if float(power.max()) <= SILENCE:
        return np.zeros((n_chroma, frames), dtype=np.float32)
    chroma = librosa.feature.chroma_stft(S=power, sr=sr, n_chroma=n_chroma, n_fft=n_fft, norm=np.inf)
    return _fix_columns(np.nan_to_num(np.clip(chroma, 0.0, 1.0)).astype(np.float32), frames)


def mfcc_image(y: np.ndarray, *, sr: int, n_mfcc: int = 20, frames: int = 512, n_fft: int = 1024,
               fmin: float = 0.0, fmax: float = 0.0, top_db: float = 80.0) -> np.ndarray:
    """MFCCs (n_mfcc, frames), min-max scaled to [0, 1] per image (silence -> zeros)."""
    y = _min_length(y, n_fft)
    power = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length_for(len(y), frames),
                                           n_mels=max(2 * n_mfcc, 40), fmin=fmin, fmax=fmax or None)
    if float(power.max()) <= SILENCE:
        return np.zeros((n_mfcc, frames), dtype=np.float32)
    log_power = librosa.power_to_db(power / power.max(), ref=1.0, amin=AMIN, top_db=top_db)
    mfcc = librosa.feature.mfcc(S=log_power, n_mfcc=n_mfcc)
    low, high = float(mfcc.min()), float(mfcc.max())
    scaled = (mfcc - low) / (high - low) if high > low else np.zeros_like(mfcc)
    return _fix_columns(scaled.astype(np.float32), frames)


def waveform_image(y: np.ndarray, *, height: int = 64, frames: int = 512) -> np.ndarray:
    """The raw waveform resampled to height * frames samples, reshaped row-major to
    (height, frames), mapped from [-peak, peak] to [0, 1]: zero amplitude is 0.5, so an
    all-silent segment is 0.5 everywhere."""
    n = height * frames
    if len(y) == 0:
        return np.full((height, frames), 0.5, dtype=np.float32)
    resized = signal.resample(y.astype(np.float64), n) if len(y) != n else y.astype(np.float64)
    peak = float(np.abs(resized).max())
    if peak <= 1e-8:
        return np.full((height, frames), 0.5, dtype=np.float32)
    return np.clip(resized / (2 * peak) + 0.5, 0.0, 1.0).astype(np.float32).reshape(height, frames)


def encode(y: np.ndarray, *, sr: int, encoding: str = "mel", height: int = 64, frames: int = 512,
           n_fft: int = 1024, fmin: float = 0.0, fmax: float = 0.0, top_db: float = 80.0) -> np.ndarray:
    """One (padded) segment (n,) -> image (height, frames) float32 in [0, 1].

    height is n_mels for `mel`, the number of chroma bins for `chroma` (12 usual), n_mfcc
    for `mfcc` and the number of rows for `waveform`.
    """
    if encoding == "mel":
        return mel_image(y, sr=sr, n_mels=height, frames=frames, n_fft=n_fft, fmin=fmin, fmax=fmax, top_db=top_db)
    if encoding == "chroma":
        return chroma_image(y, sr=sr, n_chroma=height, frames=frames, n_fft=n_fft)
    if encoding == "mfcc":
        return mfcc_image(y, sr=sr, n_mfcc=height, frames=frames, n_fft=n_fft, fmin=fmin, fmax=fmax, top_db=top_db)
    if encoding == "waveform":
        return waveform_image(y, height=height, frames=frames)
    raise ValueError(f"encoding={encoding!r} is not one of mel, chroma, mfcc, waveform")


def warm_up(*, sr: int = 22050, n_fft: int = 1024) -> None:
    """Compile librosa's numba kernels once, in this process, before any worker starts.

    librosa caches its numba kernels on disk (`cache=True`); processes that compile the same
    kernel at once can pair cache files from different processes and crash on loading them
    (numba issue 10128). Compiling first, in one process, leaves nothing for workers to race on.
    """
    noise = np.random.default_rng(0).standard_normal(sr // 2) * 0.1
    for dtype in (np.float32, np.float64):  # kernels are compiled per dtype
        for encoding, height in (("mel", 16), ("chroma", 12), ("mfcc", 13)):
            encode(noise.astype(dtype), sr=sr, encoding=encoding, height=height, frames=16, n_fft=n_fft)
