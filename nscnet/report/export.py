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


RAVEN_HEADER = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Cluster", "Segment ID")


def _write_tracks(path_audacity: Path, path_raven: Path, onsets: np.ndarray, offsets: np.ndarray,
                  names: np.ndarray, ids: np.ndarray, channels: np.ndarray) -> None:
    """One recording's Audacity label track and Raven selection table (rows already in time order).

    Plain `csv` writers rather than a pandas frame per recording: a dataset of a few hundred
    recordings is exported in a few tens of milliseconds, which matters for study trials.
    """
    import csv

    with open(path_audacity, "w", newline="") as f:
        f.write("".join(f"{on:.6f}\t{off:.6f}\t{name}\n" for on, off, name in zip(onsets, offsets, names)))
    with open(path_raven, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(RAVEN_HEADER)
        writer.writerows((i, "Spectrogram 1", ch, f"{on:.6f}", f"{off:.6f}", name, sid) for i, (ch, on, off, name, sid)
                         in enumerate(zip(channels, onsets, offsets, names, ids), start=1))


def write_exports(out_dir: str | Path, segments: pd.DataFrame, labels: np.ndarray,
                  all_segments: pd.DataFrame | None = None, names: np.ndarray | None = None) -> Path:
    """Write assignments.csv, audacity/ and raven/ under out_dir; returns out_dir.

    segments: the dataset's ok segments (N rows, image-row order); labels: (N,) cluster ids.
    all_segments: optionally every segment; skipped ones appear as 'skipped' in the tracks.
    names: optionally (N,) type names for the tracks instead of 'cluster_07' (curation); they
    are also written to assignments.csv as a `name` column.
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
    if names is not None:
        if len(names) != len(labels):
            raise DataError(f"{len(names)} names for {len(labels)} segments")
        names = np.asarray([str(n).replace("\t", " ").replace("\n", " ").replace("\r", " ") for n in names],
                           dtype=object)
        table["name"] = names
    table.to_csv(out / ASSIGNMENTS, index=False)

    tracks = table.assign(name=cluster_names(labels) if names is None else names)
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
    # one stable sort by (recording, onset, offset), then contiguous slices per recording
    tracks = tracks.assign(recording=tracks["recording"].astype(str)).sort_values(
        ["recording", "onset_s", "offset_s"], kind="stable")
    recordings = tracks["recording"].to_numpy()
    onsets = tracks["onset_s"].astype(float).to_numpy()
    offsets = tracks["offset_s"].astype(float).to_numpy()
    names = tracks["name"].astype(str).to_numpy()
    ids = tracks["segment_id"].astype(str).to_numpy()
    channels = (tracks["channel"].astype(int).to_numpy() + 1 if "channel" in tracks
                else np.ones(len(tracks), dtype=np.int64))
    bounds = np.flatnonzero(recordings[1:] != recordings[:-1]) + 1
    starts = np.r_[0, bounds] if len(tracks) else np.array([], dtype=np.int64)
    for start, stop in zip(starts, np.r_[bounds, len(tracks)]):
        stem = stems[recordings[start]]
        part = slice(start, stop)
        _write_tracks(out / "audacity" / f"{stem}.txt", out / "raven" / f"{stem}{RAVEN_SUFFIX}",
                      onsets[part], offsets[part], names[part], ids[part], channels[part])
    return out
