"""Synthetic song recordings with a known truth, for the demo and fast tests.

Each song type is a fixed sequence of 2-6 syllables (tonal sweeps, trills, harmonic stacks,
noise bursts, all within 1.5-8 kHz), 0.5-2.5 s long. Renditions vary in tempo, pitch and
amplitude; song-type usage follows a Zipf law with exponent `zipf_s` (type 0 the most used);
background white noise sits at `snr_db` below the songs' mean power. The songs are spread over
`recordings` long WAV files, each with an Audacity label track whose labels are the type ids,
plus `truth.csv` (a valid label CSV with the rendition parameters). Same seed, same files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
from scipy import signal

from nscnet.config import SynthConfig

log = logging.getLogger(__name__)

KINDS = ("sweep", "trill", "harmonic", "noise")
F_LOW, F_HIGH = 1500.0, 8000.0
TEMPO_JITTER, PITCH_JITTER = 0.015, 0.03  # renditions: tempo x U(1 +- 0.015), pitch x U(1 +- 0.03)
KIND_P = (0.35, 0.25, 0.25, 0.15)  # noise bursts look alike across types: the rarest kind
TRUTH = "truth.csv"


def make_song_types(n_types: int, rng: np.random.Generator) -> list[list[dict[str, Any]]]:
    """n_types song types, each a list of 2-6 syllables {kind, duration, gap, f0, f1, rate}."""
    types = []
    for _ in range(n_types):
        n_syllables = int(rng.integers(2, 7))
        length = rng.uniform(0.6, 2.0)  # seconds, syllables and gaps together
        weights = rng.uniform(0.6, 1.4, n_syllables)
        gaps = rng.uniform(0.25, 0.6, n_syllables - 1)
        scale = length / (weights.sum() + gaps.sum())
        syllables = []
        for i in range(n_syllables):
            f0, f1 = rng.uniform(F_LOW + 200, F_HIGH - 500, 2)
            syllables.append({
                "kind": KINDS[int(rng.choice(len(KINDS), p=KIND_P))],
                "duration": float(weights[i] * scale),
                "gap": float(gaps[i] * scale) if i < n_syllables - 1 else 0.0,
                "f0": float(f0), "f1": float(f1),
                "rate": float(rng.uniform(15, 40)),  # trill pulses per second / FM rate
            })
        types.append(syllables)
    return types


def _envelope(n: int) -> np.ndarray:
    return signal.windows.tukey(n, alpha=0.3) if n > 2 else np.ones(n)


def syllable(spec: dict[str, Any], *, sr: int, tempo: float, pitch: float, rng: np.random.Generator) -> np.ndarray:
    """One rendition of a syllable, (n,) float32 with peak about 1."""
    n = max(int(spec["duration"] / tempo * sr), 16)
    t = np.arange(n) / sr
    f0, f1 = spec["f0"] * pitch, spec["f1"] * pitch
    kind = spec["kind"]
    if kind == "noise":
        low, high = sorted((f0, f1))
        high = max(high, low + 800.0)
        sos = signal.butter(4, [low, min(high, sr / 2 - 100)], btype="bandpass", fs=sr, output="sos")
        y = signal.sosfilt(sos, rng.normal(size=n))
        y /= np.abs(y).max() + 1e-12
        return (y * _envelope(n)).astype(np.float32)
    if kind == "sweep":
        freq = np.linspace(f0, f1, n)
    elif kind == "trill":  # fast downward sweeps around the centre frequency
        depth = 0.15 * f0
        freq = f0 + depth * signal.sawtooth(2 * np.pi * spec["rate"] * t, width=0.0)
    else:  # harmonic stack: slow FM on a fundamental, harmonics below 8 kHz
        freq = min(f0, f1) / 2 + 100 * np.sin(2 * np.pi * spec["rate"] / 4 * t)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    if kind == "harmonic":
        harmonics = [h for h in range(1, 6) if h * freq.max() < F_HIGH * 1.05 and h * freq.min() > F_LOW * 0.6] or [2]
        y = sum(np.sin(h * phase) / h for h in harmonics)
    else:
        y = np.sin(phase)
    if kind == "trill":
        y = y * (0.5 + 0.5 * np.cos(2 * np.pi * spec["rate"] * t))
    y = y / (np.abs(y).max() + 1e-12)
    return (y * _envelope(n)).astype(np.float32)


def render_song(song_type: list[dict[str, Any]], *, sr: int, tempo: float, pitch: float,
                rng: np.random.Generator) -> np.ndarray:
    """A rendition of a song type: its syllables and gaps, (n,) float32."""
    parts = []
    for spec in song_type:
        parts.append(syllable(spec, sr=sr, tempo=tempo, pitch=pitch, rng=rng))
        if spec["gap"] > 0:
            parts.append(np.zeros(int(spec["gap"] / tempo * sr), dtype=np.float32))
    return np.concatenate(parts)


def zipf_probabilities(n_types: int, s: float) -> np.ndarray:
    """p(rank k) proportional to k^-s, k = 1..n_types."""
    p = np.arange(1, n_types + 1, dtype=float) ** -s
    return p / p.sum()


def write_synthetic(cfg: SynthConfig) -> pd.DataFrame:
    """Write the recordings, label tracks and truth.csv into cfg.out; returns the truth table
    (one row per song: audio_file, onset_s, offset_s, label, recording, type, tempo, pitch, amplitude).
    One writer per folder at a time (`nscnet.runs.locks`): a second one waits for the first."""
    from nscnet.runs.locks import exclusive

    with exclusive(cfg.out, what="output folder"):
        return _write_synthetic(cfg)


def _write_synthetic(cfg: SynthConfig) -> pd.DataFrame:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("synth_*.wav")) + list(out.glob("synth_*.txt")):
        old.unlink()  # a previous, larger run must not leave recordings behind
    rng = np.random.default_rng(cfg.seed)
    song_types = make_song_types(cfg.types, rng)
    song_type_of = rng.choice(cfg.types, size=cfg.songs, p=zipf_probabilities(cfg.types, cfg.zipf_s))
    recording_of = np.arange(cfg.songs) % cfg.recordings
    sr = cfg.sample_rate
    rows = []
    for r in range(cfg.recordings):
        name = f"synth_{r:03d}"
        songs, cursor = [], rng.uniform(0.3, 1.0)
        for song_type in song_type_of[recording_of == r]:
            tempo = rng.uniform(1 - TEMPO_JITTER, 1 + TEMPO_JITTER)
            pitch = rng.uniform(1 - PITCH_JITTER, 1 + PITCH_JITTER)
            amplitude = rng.uniform(0.4, 0.9)
            y = amplitude * render_song(song_types[song_type], sr=sr, tempo=tempo, pitch=pitch, rng=rng)
            start = int(cursor * sr)
            songs.append((start, y))
            rows.append({"audio_file": f"{name}.wav", "onset_s": start / sr, "offset_s": (start + len(y)) / sr,
                         "label": str(int(song_type)), "recording": name, "type": int(song_type),
                         "tempo": tempo, "pitch": pitch, "amplitude": amplitude})
            cursor = (start + len(y)) / sr + rng.uniform(0.4, 1.2)
        audio = np.zeros(int((cursor + 0.5) * sr), dtype=np.float32)
        for start, y in songs:
            audio[start:start + len(y)] += y
        song_power = np.mean([np.mean(y ** 2) for _, y in songs]) if songs else 0.1
        audio += rng.normal(scale=np.sqrt(song_power / 10 ** (cfg.snr_db / 10)), size=len(audio)).astype(np.float32)
        peak = float(np.abs(audio).max())
        if peak > 0.99:
            audio *= 0.99 / peak
        sf.write(out / f"{name}.wav", audio, sr, subtype="PCM_16")
        with open(out / f"{name}.txt", "w") as fh:
            for row in rows:
                if row["recording"] == name:
                    fh.write(f"{row['onset_s']:.6f}\t{row['offset_s']:.6f}\t{row['label']}\n")
    truth = pd.DataFrame(rows)
    truth.to_csv(out / TRUTH, index=False, float_format="%.6f")
    return truth


def run_synth(cfg: SynthConfig) -> dict[str, Any]:
    """The `synth` entry point: write the files, log counts, truth.csv and a type-usage figure."""
    import plotly.graph_objects as go

    from nscnet.runs import tracking

    with tracking.start_run(cfg, "synth") as run:
        truth = write_synthetic(cfg)
        counts = truth["type"].value_counts().reindex(range(cfg.types), fill_value=0)
        durations = truth["offset_s"] - truth["onset_s"]
        tracking.log_metrics({"songs": len(truth), "types_used": int((counts > 0).sum()),
                              "song_duration_mean": durations.mean(), "song_duration_max": durations.max()})
        tracking.log_artifact(Path(cfg.out) / TRUTH)
        expected = zipf_probabilities(cfg.types, cfg.zipf_s) * len(truth)
        fig = go.Figure([go.Bar(x=list(range(cfg.types)), y=counts.to_numpy(), name="songs"),
                         go.Scatter(x=list(range(cfg.types)), y=expected, mode="lines+markers",
                                    name=f"Zipf s={cfg.zipf_s:g} expected")])
        fig.update_layout(title="Song-type usage", xaxis_title="type id (rank)", yaxis_title="songs",
                          template="plotly_white")
        tracking.log_figure(fig, "type_usage")
        print(f"synth: {len(truth)} songs of {cfg.types} types in {cfg.recordings} recordings -> {cfg.out}", flush=True)
    return {"run_id": run.info.run_id, "out": cfg.out, "songs": len(truth)}


# ------------------------------------------------------------------ archive-scale datasets

DATASET_KIND = "synthetic-images"  # preprocess.json "source" of a dataset written by write_image_dataset


def song_templates(n_types: int, *, height: int = 64, frames: int = 512, duration_s: float = 2.5,
                   sample_rate: int = 22050, seed: int = 0) -> np.ndarray:
    """(n_types, height, frames) float32 log-mel images in [0, 1] of one clean rendition of each
    song type of `make_song_types` (the images `preprocess` makes of a noiseless song)."""
    from nscnet.audio.features import encode, fit_duration

    rng = np.random.default_rng(seed)
    types = make_song_types(n_types, rng)
    n_samples = int(round(duration_s * sample_rate))
    out = np.empty((n_types, height, frames), dtype=np.float32)
    for t, song_type in enumerate(types):
        y = render_song(song_type, sr=sample_rate, tempo=1.0, pitch=1.0, rng=rng)
        y, _ = fit_duration(y, n_samples=n_samples, pad="end")
        out[t] = encode(y, sr=sample_rate, height=height, frames=frames)
    return out


def write_image_dataset(out: str | Path, n: int, *, types: int = 64, height: int = 64, frames: int = 512,
                        zipf_s: float = 1.0, noise: float = 0.08, seed: int = 0, chunk: int = 1024) -> Path:
    """A dataset folder in `nscnet.images.dataset`'s format (spectrograms.npy float16 memmap, segments.csv,
    preprocess.json) of `n` synthetic segments, written directly in the image domain: fast enough
    for archive-scale benchmarks (100,000 x 64 x 512 in minutes) where cutting real audio is
    measured separately (benchmarks/archive.py).

    Each image is the clean log-mel template of its song type (`song_templates`, types drawn by a
    Zipf law as in `write_synthetic`), shifted by up to +-8 frames in time and +-1 mel band in
    pitch, scaled in level by U(0.8, 1.0), plus uniform background noise of amplitude `noise`,
    clipped to [0, 1]. Labels are the type ids. Memory stays at one chunk of images.
    Same arguments, same files.
    """
    from nscnet.images.dataset import IMAGES, META, SEGMENTS, SEGMENT_COLUMNS, open_image_writer

    if n < 1 or types < 1 or chunk < 1:
        raise ValueError(f"n={n}, types={types}, chunk={chunk} must all be >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    templates = song_templates(types, height=height, frames=frames, seed=seed)
    rng = np.random.default_rng(seed + 1)
    type_of = rng.choice(types, size=n, p=zipf_probabilities(types, zipf_s))
    shifts, bands = rng.integers(-8, 9, size=n), rng.integers(-1, 2, size=n)
    levels = rng.uniform(0.8, 1.0, size=n).astype(np.float32)
    noise_rng = np.random.default_rng(seed + 2)  # drawn image by image: the files do not depend on `chunk`
    writer = open_image_writer(out / f"{IMAGES}.partial", n, height, frames)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        block = noise_rng.random((stop - start, height, frames), dtype=np.float32)
        block *= noise
        for i in range(start, stop):
            image = np.roll(templates[type_of[i]], (int(bands[i]), int(shifts[i])), axis=(0, 1))
            block[i - start] += levels[i] * image
        np.clip(block, 0.0, 1.0, out=block)
        writer[start:stop] = block
    writer.flush()
    del writer
    segments = pd.DataFrame({
        "segment_id": [f"s{i:07d}" for i in range(n)], "recording": [f"synth_{i // 1000:04d}" for i in range(n)],
        "channel": 0, "onset_s": 0.0, "offset_s": 2.5, "duration_s": 2.5, "label": type_of.astype(str),
        "status": "ok", "row": np.arange(n)})[SEGMENT_COLUMNS]
    segments.to_csv(out / f"{SEGMENTS}.partial", index=False)
    import os

    os.replace(out / f"{IMAGES}.partial", out / IMAGES)
    os.replace(out / f"{SEGMENTS}.partial", out / SEGMENTS)
    meta = {"complete": True, "source": DATASET_KIND, "image_shape": [height, frames], "encoding": "mel",
            "counts": {"segments": n, "ok": n, "skipped": {}},
            "params": {"n": n, "types": types, "zipf_s": zipf_s, "noise": noise, "seed": seed}}
    import json

    (out / META).write_text(json.dumps(meta, indent=1))
    return out
