"""Test datasets for the clustering core: image blobs of known classes, and the real syllables.

`make_blob_dataset` writes a real dataset folder (spectrograms.npy through
`nscnet.dataset.open_image_writer`, segments.csv) whose images are noisy copies of a few
random prototypes, so the right clustering is known. `bengalese_syllables` builds the
Bengalese finch syllable dataset once per session.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from nscnet.dataset import IMAGES, META, SEGMENTS, SEGMENT_COLUMNS, open_image_writer


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


def build_syllable_dataset(data: Path, out: Path, *, duration_s: float = 0.13, height: int = 64,
                           frames: int = 128, highpass_hz: float = 500.0, n_fft: int = 512,
                           top_db: float = 80.0, every: int = 1) -> Path:
    """The Bengalese finch syllables (`data`/syllables.csv) as a dataset folder, with librosa.

    Each syllable: 5th-order Butterworth high-pass, centred and zero-padded or cropped to
    duration_s, log-mel (height mel bands, `frames` columns, n_fft), dB re. its maximum scaled
    from [-top_db, 0] to [0, 1]. every=n keeps every n-th syllable (a subset).
    """
    import librosa
    from scipy import signal

    table = pd.read_csv(data / "syllables.csv", dtype={"label": str}).iloc[::every].reset_index(drop=True)
    out.mkdir(parents=True, exist_ok=True)
    clips: list[np.ndarray] = []
    loaded, y, sr = None, None, 0
    for audio_file, onset, offset in zip(table["audio_file"], table["onset_s"], table["offset_s"]):
        if audio_file != loaded:
            y, sr = librosa.load(data / audio_file, sr=None, mono=True)
            y = signal.sosfiltfilt(signal.butter(5, highpass_hz, btype="highpass", fs=sr, output="sos"), y)
            loaded = audio_file
        n = int(round(duration_s * sr))
        clip = y[int(onset * sr):int(offset * sr)]
        fixed = np.zeros(n, dtype=np.float32)  # centred: zero-padded or cropped on both sides
        if len(clip) > n:
            fixed[:] = clip[(len(clip) - n) // 2:][:n]
        else:
            fixed[(n - len(clip)) // 2:][:len(clip)] = clip
        clips.append(fixed)
    hop = max(1, len(clips[0]) // (frames - 1))
    mel = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=height)
    images = open_image_writer(out / IMAGES, len(table), height, frames)
    for start in range(0, len(clips), 1024):  # batched STFT: (batch, n) -> (batch, 1 + n_fft/2, frames)
        power = np.abs(librosa.stft(np.stack(clips[start:start + 1024]), n_fft=n_fft, hop_length=hop)) ** 2
        mels = np.einsum("mf,bft->bmt", mel, power)
        peak = mels.reshape(len(mels), -1).max(axis=1)[:, None, None]
        db = 10 * np.log10(np.maximum(mels, 1e-10)) - 10 * np.log10(np.maximum(peak, 1e-10))
        image = np.clip((np.maximum(db, -top_db) + top_db) / top_db, 0, 1)
        images[start:start + len(image)] = librosa.util.fix_length(image, size=frames, axis=2)
    images.flush()
    del images
    segments = pd.DataFrame({
        "segment_id": [f"{Path(a).stem}_{i:05d}" for i, a in enumerate(table["audio_file"])],
        "recording": table["audio_file"].astype(str), "channel": 0, "onset_s": table["onset_s"],
        "offset_s": table["offset_s"], "duration_s": table["offset_s"] - table["onset_s"],
        "label": table["label"], "status": "ok", "row": np.arange(len(table)),
    })
    segments[SEGMENT_COLUMNS].to_csv(out / SEGMENTS, index=False)
    (out / META).write_text(json.dumps({"source": str(data), "duration_s": duration_s, "n_fft": n_fft,
                                        "highpass_hz": highpass_hz, "every": every}))
    return out
