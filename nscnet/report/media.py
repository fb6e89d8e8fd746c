"""Images and sounds of a report: spectrogram JPEGs, the map's thumbnail atlas, audio clips cut
from the original recordings, and the per-unit WAV export. Arrays in, bytes out (no HTML here).

Audio is encoded as Ogg Vorbis when soundfile's libsndfile writes it (auto), else as 16-bit
WAV; Ogg Opus on request. Measured on the Bengalese finch recordings (1 CPU thread): libsndfile
encodes Vorbis at 16 kHz about 200x faster than real time (30 kbit/s at VORBIS_LEVEL) and Opus
only about 20x (25 kbit/s), so Opus costs ~70 s more for 23 minutes of recordings. Opus runs at
8, 12, 16, 24 or 48 kHz only: a requested rate is rounded up to one of those. Every clip is
peak-normalised for listening.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import soundfile as sf

from nscnet.config import DataError

log = logging.getLogger(__name__)

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
VORBIS_LEVEL = 0.9  # soundfile compression_level for Vorbis (0 = best quality, 1 = smallest)
THUMB_COLUMNS = 128  # thumbnails per row of the map's atlas


@lru_cache(maxsize=1)
def _palette() -> np.ndarray:
    """(256, 3) uint8 'magma' colour table."""
    import matplotlib

    return (matplotlib.colormaps["magma"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def colour(image: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] (row 0 = lowest band) -> (H, W, 3) uint8, low frequencies at the bottom."""
    values = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32)), 0, 1)
    return _palette()[(values[::-1] * 255).astype(np.uint8)]


def jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def data_uri(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def spectrogram_uri(image: np.ndarray) -> str:
    return data_uri(jpeg(colour(image), quality=75), "image/jpeg")


def thumbnail_atlas(images: np.ndarray, factor: int = 2, chunk: int = 2048) -> tuple[bytes, int, int]:
    """Every image shrunk by `factor` (block mean) and tiled THUMB_COLUMNS per row into one JPEG:
    (JPEG bytes, tile height, tile width); tile i is at row i // THUMB_COLUMNS, column i % THUMB_COLUMNS."""
    n, h, w = images.shape
    th, tw = max(1, h // factor), max(1, w // factor)
    rows = (n + THUMB_COLUMNS - 1) // THUMB_COLUMNS
    atlas = np.zeros((rows * th, THUMB_COLUMNS * tw), dtype=np.float32)
    for start in range(0, n, chunk):
        block = np.asarray(images[start:start + chunk], dtype=np.float32)[:, :th * factor, :tw * factor]
        small = block.reshape(len(block), th, factor, tw, factor).mean(axis=(2, 4))
        for j, tile in enumerate(small):
            i = start + j
            r, c = divmod(i, THUMB_COLUMNS)
            atlas[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tile[::-1]
    rgb = _palette()[(np.clip(atlas, 0, 1) * 255).astype(np.uint8)]
    return jpeg(rgb, quality=70), th, tw


# ----------------------------------------------------------------------------------- audio

@dataclass(frozen=True)
class AudioFormat:
    """How clips are encoded: codec 'opus' or 'wav', and the rate asked for (0 = the recording's own)."""

    codec: str
    rate: int

    @property
    def mime(self) -> str:
        return "audio/ogg" if self.codec in ("opus", "vorbis") else "audio/wav"

    def rate_for(self, source_rate: int) -> int:
        """The rate clips of a recording at source_rate are written at."""
        rate = min(self.rate, source_rate) if self.rate else source_rate
        if self.codec == "opus":
            return next((r for r in OPUS_RATES if r >= rate), OPUS_RATES[-1])
        return int(rate)

    def describe(self, source_rate: int | None = None) -> str:
        name = {"opus": "Ogg Opus", "vorbis": "Ogg Vorbis", "wav": "16-bit WAV"}[self.codec]
        if source_rate is None:
            return f"{name} at {'the recording rate' if not self.rate else f'{self.rate} Hz'}"
        return f"{name} at {self.rate_for(source_rate)} Hz (recordings at {source_rate} Hz)"


def choose_format(audio_format: str, rate: int) -> AudioFormat:
    """`auto`: Opus when soundfile writes it, else WAV; an unavailable codec is a DataError."""
    if audio_format == "auto":
        audio_format = "vorbis" if "VORBIS" in sf.available_subtypes("OGG") else "wav"
    if audio_format in ("opus", "vorbis") and audio_format.upper() not in sf.available_subtypes("OGG"):
        raise DataError(f"audio_format={audio_format}: this soundfile/libsndfile cannot write it (use wav or auto)")
    return AudioFormat(audio_format, int(rate))


def encode(y: np.ndarray, source_rate: int, fmt: AudioFormat) -> tuple[bytes, int]:
    """(encoded bytes, sample rate) of a mono float clip, peak-normalised to 0.9."""
    from nscnet.audio.io import resample

    y = np.asarray(y, dtype=np.float32)
    rate = fmt.rate_for(source_rate)
    if rate != source_rate and len(y):
        y = resample(y, orig_sr=source_rate, target_sr=rate)
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if peak > 0:
        y = y * (0.9 / peak)
    buffer = io.BytesIO()
    if fmt.codec == "wav":
        sf.write(buffer, y, rate, format="WAV", subtype="PCM_16")
        return buffer.getvalue(), rate
    subtype = "VORBIS" if fmt.codec == "vorbis" else "OPUS"
    extra = {"compression_level": VORBIS_LEVEL} if fmt.codec == "vorbis" else {}
    # in blocks: libsndfile's Ogg encoders crashed the process (SIGSEGV) on one write of a whole
    # recording of several minutes (the demo's); blocks of 2^15 frames write the same stream
    with sf.SoundFile(buffer, "w", samplerate=rate, channels=1, format="OGG", subtype=subtype, **extra) as out:
        for start in range(0, len(y), OGG_BLOCK):
            out.write(y[start:start + OGG_BLOCK])
    return buffer.getvalue(), rate


OGG_BLOCK = 1 << 15  # frames per libsndfile write of an Ogg stream


def recording_file(audio_dir: Path, recording: str) -> Path | None:
    path = audio_dir / recording
    return path if path.is_file() else None


def read_recording(path: Path) -> tuple[np.ndarray, int]:
    """The first channel of a recording at its own rate, float32."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(data[:, 0]), int(rate)


def cut(y: np.ndarray, rate: int, onset_s: float, offset_s: float, context_s: float) -> tuple[np.ndarray, float]:
    """The samples from onset - context to offset + context (clipped to the recording), and the
    time of its first sample in the recording."""
    start = max(0, int(round((onset_s - context_s) * rate)))
    stop = min(len(y), int(round((offset_s + context_s) * rate)))
    return y[start:max(start, stop)], start / rate


def by_recording(table: pd.DataFrame, audio_dir: Path | None) -> Iterator[tuple[str, np.ndarray | None, int, pd.DataFrame]]:
    """(recording, samples or None when missing, rate, its rows) for each recording of table, read once."""
    for recording, rows in table.groupby("recording", sort=True):
        path = recording_file(audio_dir, str(recording)) if audio_dir is not None else None
        if path is None:
            yield str(recording), None, 0, rows
            continue
        y, rate = read_recording(path)
        yield str(recording), y, rate, rows


# -------------------------------------------------------------------------- per-unit export

def write_units(out: Path, table: pd.DataFrame, names: dict[int, str], audio_dir: Path | None) -> dict[str, int]:
    """Every segment of table (segment_id, recording, onset_s, offset_s, cluster) as its own WAV at
    the recording's rate plus a JSON sidecar, under out/<cluster name>/; returns counts.

    Folder and file names are sanitised (`nscnet.report.export.safe_stem`); no path is built from raw
    label text.
    """
    from nscnet.report.export import safe_stem

    if audio_dir is None:
        raise DataError("units: the original recordings are not found (pass --audio <folder>)")
    folders: dict[int, str] = {}
    used: set[str] = set()
    for c in sorted(set(int(v) for v in table["cluster"])):
        base = safe_stem(names.get(c, str(c))) or f"cluster_{c}"
        folder = base if base.lower() not in used else f"{base}_{c}"
        used.add(folder.lower())
        folders[c] = folder
    written, missing = 0, 0
    seen_files: set[str] = set()
    for recording, y, rate, rows in by_recording(table, audio_dir):
        if y is None:
            missing += len(rows)
            continue
        for row in rows.itertuples(index=False):
            c = int(row.cluster)
            folder = out / folders[c]
            folder.mkdir(parents=True, exist_ok=True)
            stem = safe_stem(str(row.segment_id).replace("#", "_"))
            while f"{folders[c]}/{stem}".lower() in seen_files:
                stem += "_"
            seen_files.add(f"{folders[c]}/{stem}".lower())
            clip, _ = cut(y, rate, float(row.onset_s), float(row.offset_s), 0.0)
            sf.write(folder / f"{stem}.wav", clip, rate, subtype="PCM_16")
            sidecar = {"segment_id": str(row.segment_id), "recording": recording, "onset_s": float(row.onset_s),
                       "offset_s": float(row.offset_s), "cluster": c, "name": names.get(c, str(c)),
                       "sample_rate": rate}
            (folder / f"{stem}.json").write_text(json.dumps(sidecar, indent=1))
            written += 1
    return {"units_written": written, "units_missing_audio": missing}
