"""Cluster assignments exported for biologists: a CSV, Audacity label tracks, Raven tables.

`write_exports(out_dir, segments, labels)` writes
- `assignments.csv`: `segment_id, recording, onset_s, offset_s, cluster` (-1 = noise);
- `audacity/<recording>.txt`: one Audacity label track per recording
  (`onset_s<TAB>offset_s<TAB>cluster_07`; noise as `noise`; skipped segments, when
  `all_segments` is given, as `skipped`), to open next to the audio;
- `raven/<recording>.Table.1.selections.txt`: one Raven selection table per recording.

File names come from the recording names in segments.csv, sanitised (path separators and odd
characters replaced, duplicates made unique); no path is ever built from label text.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from nscnet.config import DataError

NOISE = -1
ASSIGNMENTS = "assignments.csv"
RAVEN_SUFFIX = ".Table.1.selections.txt"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff"}


def safe_stem(recording: str) -> str:
    """A file-name stem for a recording name: folders joined by '__', odd characters '_'.

    >>> safe_stem("site 1/../rec:02.wav")
    'site_1__rec_02'
    """
    text = str(recording).replace("\\", "/")
    suffix = Path(text).suffix
    if suffix.lower() in _AUDIO_SUFFIXES:
        text = text[: -len(suffix)]
    parts = [_UNSAFE.sub("_", p).strip("._") for p in text.split("/")]
    stem = "__".join(p for p in parts if p)
    return stem[:150] or "recording"


def _stems(recordings: list[str]) -> dict[str, str]:
    """Recording name -> unique safe stem."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in recordings:
        stem = base = safe_stem(name)
        n = 2
        while stem.lower() in used:
            stem = f"{base}_{n}"
            n += 1
        used.add(stem.lower())
        out[name] = stem
    return out


def cluster_names(labels: np.ndarray) -> np.ndarray:
    """'cluster_07'-style names, zero-padded to the width of the largest id (2 at least); 'noise'."""
    labels = np.asarray(labels)
    width = max(2, len(str(int(labels.max())))) if len(labels) else 2
    return np.array(["noise" if c == NOISE else f"cluster_{int(c):0{width}d}" for c in labels], dtype=object)


def _raven_table(rows: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "Selection": np.arange(1, len(rows) + 1),
        "View": "Spectrogram 1",
        "Channel": rows["channel"].astype(int).to_numpy() + 1 if "channel" in rows else 1,
        "Begin Time (s)": rows["onset_s"].to_numpy(),
        "End Time (s)": rows["offset_s"].to_numpy(),
        "Cluster": rows["name"].to_numpy(),
        "Segment ID": rows["segment_id"].to_numpy(),
    })


def write_exports(out_dir: str | Path, segments: pd.DataFrame, labels: np.ndarray,
                  all_segments: pd.DataFrame | None = None) -> Path:
    """Write assignments.csv, audacity/ and raven/ under out_dir; returns out_dir.

    segments: the dataset's ok segments (N rows, image-row order); labels: (N,) cluster ids.
    all_segments: optionally every segment; skipped ones appear as 'skipped' in the tracks.
    """
    out = Path(out_dir)
    labels = np.asarray(labels)
    if len(labels) != len(segments):
        raise DataError(f"{len(labels)} cluster labels for {len(segments)} segments")
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({
        "segment_id": segments["segment_id"].astype(str).to_numpy(),
        "recording": segments["recording"].astype(str).to_numpy(),
        "onset_s": segments["onset_s"].astype(float).to_numpy(),
        "offset_s": segments["offset_s"].astype(float).to_numpy(),
        "cluster": labels.astype(np.int64),
    })
    table.to_csv(out / ASSIGNMENTS, index=False)

    tracks = table.assign(name=cluster_names(labels))
    if "channel" in segments:
        tracks["channel"] = segments["channel"].to_numpy()
    if all_segments is not None and "status" in all_segments:
        skipped = all_segments[all_segments["status"] != "ok"]
        if len(skipped):
            extra = pd.DataFrame({c: skipped[c].to_numpy() for c in ("segment_id", "recording", "onset_s", "offset_s")})
            extra["cluster"], extra["name"] = NOISE, "skipped"
            if "channel" in tracks:
                extra["channel"] = skipped["channel"].to_numpy() if "channel" in skipped else 0
            tracks = pd.concat([tracks, extra.astype({"recording": str, "segment_id": str})], ignore_index=True)

    stems = _stems(sorted(tracks["recording"].astype(str).unique()))
    (out / "audacity").mkdir(exist_ok=True)
    (out / "raven").mkdir(exist_ok=True)
    for recording, rows in tracks.groupby("recording", sort=True):
        rows = rows.sort_values(["onset_s", "offset_s"], kind="stable")
        stem = stems[str(recording)]
        lines = [f"{on:.6f}\t{off:.6f}\t{name}" for on, off, name in
                 zip(rows["onset_s"].astype(float), rows["offset_s"].astype(float), rows["name"])]
        (out / "audacity" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
        _raven_table(rows).to_csv(out / "raven" / f"{stem}{RAVEN_SUFFIX}", sep="\t", index=False,
                                  float_format="%.6f")
    return out
