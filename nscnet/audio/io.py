"""Reading recordings: any format soundfile reads (WAV 8/16/24/32-bit and float, FLAC, OGG,
MP3), one channel, resampled to the target rate, NaN samples replaced by zeros.

Every failure is an `AudioError` (a `DataError`) whose message names the file and whose
`reason` is a short code (`unreadable_audio`, `truncated_audio`, `empty_audio`,
`channel_missing`) that preprocessing writes into the `status` column of segments.csv.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from nscnet.config import DataError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
_TRUNCATED = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


class AudioError(DataError):
    """A recording that cannot be used; `reason` is the status code for segments.csv."""

    def __init__(self, message: str, reason: str = "unreadable_audio"):
        super().__init__(message)
        self.reason = reason


def is_audio_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    """soundfile's header information; AudioError naming the file when it is not audio or truncated."""
    path = Path(path)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile: "Format not recognised", missing chunks, ...
        message = str(exc).split(": ", 1)[-1] if ": " in str(exc) else str(exc)
        raise AudioError(f"{path}: not a readable audio file ({message})") from None
    truncated = _TRUNCATED.search(info.extra_info or "")
    if truncated:
        declared, present = int(truncated.group(1)), int(truncated.group(2))
        raise AudioError(f"{path}: truncated audio file (header declares {declared} data bytes, "
                         f"only {present} are there)", reason="truncated_audio")
    if info.frames == 0:
        raise AudioError(f"{path}: empty recording (0 samples)", reason="empty_audio")
    return info


def load_audio(path: str | Path, *, sample_rate: int, channel: int = 0) -> tuple[np.ndarray, int]:
    """One channel of a recording as float32 at `sample_rate`.

    Returns (y, n_nan): y has shape (n_samples,); n_nan counts the NaN/inf samples that were
    replaced by 0. Raises AudioError naming the file for non-audio, truncated or empty files
    and for a channel index the file does not have.
    """
    path = Path(path)
    info = audio_info(path)
    if channel >= info.channels:
        raise AudioError(f"{path}: channel {channel} requested (0-based) but the file has "
                         f"{info.channels} channel(s)", reason="channel_missing")
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: cannot decode audio ({exc})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty recording (0 samples)", reason="empty_audio")
    y = np.ascontiguousarray(data[:, channel])
    bad = ~np.isfinite(y)
    n_nan = int(bad.sum())
    if n_nan:
        log.warning("%s: %d NaN/inf samples replaced by 0", path, n_nan)
        y[bad] = 0.0
    if file_rate != sample_rate:
        y = resample(y, orig_sr=file_rate, target_sr=sample_rate)
    return y, n_nan


def resample(y: np.ndarray, *, orig_sr: int, target_sr: int) -> np.ndarray:
    """(n,) float32 at orig_sr -> (m,) float32 at target_sr (soxr "HQ").

    soxr is called directly rather than through `librosa.resample` (which runs the same soxr
    "HQ"): librosa's resample module pulls in numba, +220 MB of resident memory per process.
    """
    import soxr

    return np.asarray(soxr.resample(y, orig_sr, target_sr, quality="HQ"), dtype=np.float32)
