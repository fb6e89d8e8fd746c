"""Chromagram note entropy: how tonal (low) or noisy (high) each song is, and `run_entropy`.

For every frame, the 12-bin chroma vector is normalised to sum 1 and its Shannon entropy in
bits taken: 0 for all energy in one pitch class, log2(12) = 3.58 for energy spread evenly.
A segment's entropy is the mean over its audible frames; frames quieter than `silence_db`
below the segment's loudest frame are left out (a silent frame has no pitch content, and
counting it as uniform would push every quiet song toward 3.58).
"""

from __future__ import annotations

import functools
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from nscnet.config import DataError, EntropyConfig

log = logging.getLogger(__name__)

MAX_BITS = float(np.log2(12))


def chroma_entropy(chroma: np.ndarray, frame_mask: np.ndarray | None = None) -> float:
    """Mean over the masked frames of the Shannon entropy (bits) of each chroma column.

    `chroma`: (12, T) non-negative chroma energies (any scale: each column is normalised to sum
    1); `frame_mask`: (T,) bool, True for frames to use (default all). Frames whose chroma sums
    to 0 are left out too. Returns NaN when no frame is left.

    >>> chroma_entropy(np.eye(12)[:, :3])  # one pitch class per frame
    0.0
    >>> round(chroma_entropy(np.ones((12, 4))), 2)  # energy spread evenly
    3.58
    """
    chroma = np.asarray(chroma, dtype=float)
    if chroma.ndim != 2 or chroma.shape[0] != 12:
        raise ValueError(f"chroma must have shape (12, T), not {chroma.shape}")
    mask = np.ones(chroma.shape[1], bool) if frame_mask is None else np.asarray(frame_mask, bool)
    if mask.shape != (chroma.shape[1],):
        raise ValueError(f"frame_mask must have shape ({chroma.shape[1]},), not {mask.shape}")
    mask = mask & (chroma.sum(axis=0) > 0)
    if not mask.any():
        return float("nan")
    return float(scipy.stats.entropy(chroma[:, mask], base=2, axis=0).mean())


@functools.lru_cache(maxsize=8)
def _chroma_filters(sr: int, n_fft: int, n_chroma: int) -> np.ndarray:
    """librosa's chroma filter bank (n_chroma, 1 + n_fft/2) at tuning 0 (read-only: shared)."""
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bank = librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=0.0, n_chroma=n_chroma)
    bank.setflags(write=False)
    return bank


def segment_chroma(waveform: np.ndarray, sr: int, *, n_fft: int = 2048, hop_length: int = 512,
                   silence_db: float = -60.0, resolution: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Chroma (12, T) of a waveform (n,) and the mask (T,) of its audible frames.

    Power STFT -> `librosa.feature.chroma_stft` with 12 * `resolution` bins per octave (no
    per-frame normalisation; tuning 0, bird song is not tuned to A440), then the `resolution`
    bins around each semitone summed into its pitch class. librosa's 12-bin filters
    (resolution 1) spread every FFT bin over the neighbouring classes with weight exp(-2) =
    0.135, so even a pure tone scores about 1 bit; at resolution 3 the spread stays inside
    the class and a pure tone above 1 kHz scores under 0.1 bit. A frame is audible when its
    power is within `silence_db` dB of the loudest frame (and not zero). Waveforms shorter
    than `n_fft` are zero-padded.
    """
    import librosa

    y = np.asarray(waveform, dtype=np.float32)
    if len(y) < n_fft:
        y = np.pad(y, (0, n_fft - len(y)))
    power = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length)) ** 2  # (1 + n_fft/2, T)
    # what librosa.feature.chroma_stft(S=power, norm=None, tuning=0.0) computes, with its filter
    # bank built once per (sr, n_fft, bins) instead of once per segment (60% of the step's time)
    chroma = np.einsum("cf,...ft->...ct", _chroma_filters(sr, n_fft, 12 * resolution), power, optimize=True)
    if resolution > 1:  # bin 0 is C itself: rows -r//2 .. r//2 around each semitone form its class
        chroma = np.roll(chroma, resolution // 2, axis=0).reshape(12, resolution, -1).sum(axis=1)
    frame_power = power.sum(axis=0)
    loudest = frame_power.max()
    if loudest <= 0:
        return chroma, np.zeros(chroma.shape[1], bool)
    with np.errstate(divide="ignore"):
        level_db = 10 * np.log10(frame_power / loudest)
    return chroma, (level_db >= silence_db) & (frame_power > 0)


def segment_entropy(waveform: np.ndarray, sr: int, n_fft: int = 2048, silence_db: float = -60.0, *,
                    hop_length: int = 512, resolution: int = 3) -> float:
    """Mean chroma entropy in bits of one segment (n,) over its audible frames; NaN if silent.

    >>> sr = 22050; t = np.arange(sr) / sr
    >>> segment_entropy(np.sin(2 * np.pi * 2093.0 * t), sr) < 0.5  # a pure C7
    True
    """
    chroma, audible = segment_chroma(waveform, sr, n_fft=n_fft, hop_length=hop_length, silence_db=silence_db,
                                     resolution=resolution)
    return chroma_entropy(chroma, audible)


def summarise(table: pd.DataFrame, by: str) -> pd.DataFrame:
    """Mean, std and count of `entropy_bits` per value of column `by` (NaN entropies left out)."""
    valid = table.dropna(subset=["entropy_bits"])
    summary = valid.groupby(by)["entropy_bits"].agg(["mean", "std", "count"]).reset_index()
    return summary.rename(columns={"mean": "entropy_mean", "std": "entropy_std", "count": "segments"})


def find_segments(cfg: EntropyConfig) -> Any:
    """The label tracks matched to recordings (`nscnet.audio.labels.collect`); DataError when
    there is no labelled segment at all."""
    from nscnet.audio.labels import collect

    inventory = collect(cfg.audio, cfg.labels, cfg.label_format)
    if inventory.n_lines == 0:
        raise DataError(f"no labelled segments found in {cfg.audio} (labels: {cfg.labels or cfg.audio})")
    return inventory


def entropy_table(cfg: EntropyConfig, inventory: Any = None) -> pd.DataFrame:
    """One row per segment of the audio (skipped ones included, with their status): the
    segment's row from `iter_segments` plus `entropy_bits` and `audible_frames`."""
    from tqdm import tqdm

    from nscnet.audio.segments import iter_segments

    rows = []
    segments = iter_segments(cfg.audio, cfg.labels, cfg.label_format, cfg.sample_rate, cfg.channel,
                             cfg.highpass_hz, include_skipped=True, inventory=inventory or find_segments(cfg))
    for row, waveform in tqdm(segments, desc="entropy", unit="segment", mininterval=2.0):
        entropy, frames = float("nan"), 0
        if row["status"] == "ok" and len(waveform):
            chroma, audible = segment_chroma(waveform, cfg.sample_rate, n_fft=cfg.n_fft,
                                             hop_length=cfg.hop_length, silence_db=cfg.silence_db,
                                             resolution=cfg.chroma_resolution)
            entropy, frames = chroma_entropy(chroma, audible), int(audible.sum())
            if frames == 0:
                row = {**row, "status": "silent", "detail": "no audible frame"}
        rows.append({**row, "entropy_bits": entropy, "audible_frames": frames})
    if not rows:
        raise DataError(f"no labelled segments found in {cfg.audio} (labels: {cfg.labels or cfg.audio})")
    return pd.DataFrame(rows)


def run_entropy(cfg: EntropyConfig) -> dict[str, Any]:
    """Chroma entropy of every segment of `cfg.audio`, logged as an MLflow run.

    Metrics: entropy_mean, entropy_std (over segments), entropy_segments, entropy_skipped.
    Artifacts: entropy.csv (per segment), entropy_recordings.csv and entropy_labels.csv
    (mean, std, count per recording / per reference label), figures/entropy_histogram.
    Returns the metrics and `run_id`.
    """
    from nscnet.runs import tracking
    from nscnet.analysis.plots import entropy_histogram

    inventory = find_segments(cfg)  # bad folders fail here, before a run is opened
    with tracking.start_run(cfg, "entropy") as run:
        table = entropy_table(cfg, inventory)
        values = table["entropy_bits"].to_numpy(dtype=float)
        valid = values[np.isfinite(values)]
        metrics = {
            "entropy_mean": float(valid.mean()) if len(valid) else None,
            "entropy_std": float(valid.std(ddof=1)) if len(valid) > 1 else None,
            "entropy_segments": float(len(valid)),
            "entropy_skipped": float(len(values) - len(valid)),
        }
        tracking.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            table.to_csv(Path(tmp) / "entropy.csv", index=False)
            summarise(table, "recording").to_csv(Path(tmp) / "entropy_recordings.csv", index=False)
            summarise(table, "label").to_csv(Path(tmp) / "entropy_labels.csv", index=False)
            for name in ("entropy.csv", "entropy_recordings.csv", "entropy_labels.csv"):
                tracking.log_artifact(Path(tmp) / name)
        tracking.log_figure(entropy_histogram(valid), "entropy_histogram")
    if not len(valid):
        log.warning("no segment had an audible frame: no entropy metrics logged")
    else:
        log.info("chroma entropy of %d segments: mean %.3f bits, std %.3f (max %.2f); %d skipped",
                 len(valid), metrics["entropy_mean"], metrics["entropy_std"] or float("nan"), MAX_BITS,
                 len(values) - len(valid))
    return {**{k: v for k, v in metrics.items() if v is not None}, "run_id": run.info.run_id}
