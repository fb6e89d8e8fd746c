"""Cutting labelled segments out of recordings: the reading and cutting code shared by
`preprocess` (which pads and encodes them) and `entropy` (which analyses them as they are).

Each segment comes with its row for segments.csv (`segment_id, recording, channel, onset_s,
offset_s, duration_s, label, status, detail, line, track`). `status` is `ok` or why the
segment was skipped: a bad label line (`not_numeric`, `offset_not_after_onset`), a position
beyond the end of the audio (`beyond_audio_end`), no recording for its track
(`no_recording`) or a recording that cannot be used (`unreadable_audio`, `truncated_audio`,
`empty_audio`, `channel_missing`, `error`). A segment that runs past the end of the audio is
clipped there (and kept when something is left).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from nscnet.audio.features import highpass
from nscnet.audio.io import AudioError, load_audio
from nscnet.audio.labels import Inventory, LabelLine, Track, collect

log = logging.getLogger(__name__)

BEYOND_END = "beyond_audio_end"
NO_RECORDING = "no_recording"
EMPTY = np.zeros(0, dtype=np.float32)


def _row(track: Track, index: int, line: LabelLine, channel: int, status: str, detail: str = "") -> dict[str, Any]:
    return {
        "segment_id": f"{track.stem}#{index}",
        "recording": track.recording.name if track.recording is not None else f"{track.stem}.?",
        "channel": channel,
        "onset_s": line.onset_s,
        "offset_s": line.offset_s,
        "duration_s": line.offset_s - line.onset_s if status != "not_numeric" else float("nan"),
        "label": line.label,
        "status": status,
        "detail": detail,
        "line": line.line,
        "track": track.source.name,
    }


def cut_track(track: Track, *, sample_rate: int, channel: int = 0, highpass_hz: float = 0.0,
              highpass_order: int = 5) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """Every segment of one track: (row, waveform (n,) float32), skipped ones with an empty waveform.

    The recording is read once, resampled to `sample_rate` and high-pass filtered as a whole
    (no filter edge effects at segment borders), then cut. A recording that cannot be read
    makes all its segments skipped with the reason; it never raises.
    """
    y, problem, detail = EMPTY, "", ""
    if track.recording is None:
        problem, detail = NO_RECORDING, f"no recording {track.stem}.* for track {track.source.name}"
    else:
        try:
            y, n_nan = load_audio(track.recording, sample_rate=sample_rate, channel=channel)
            y = highpass(y, sr=sample_rate, cutoff_hz=highpass_hz, order=highpass_order)
            if n_nan:
                detail = f"{n_nan} NaN samples in the recording replaced by 0"
        except AudioError as exc:
            problem, detail = exc.reason, str(exc)
        except Exception as exc:  # one bad recording never aborts the rest
            log.exception("%s: unexpected error", track.recording)
            problem, detail = "error", f"{track.recording}: {type(exc).__name__}: {exc}"
    end_s = len(y) / sample_rate
    for index, line in enumerate(track.lines):
        if line.problem:
            yield _row(track, index, line, channel, line.problem, line.detail), EMPTY
            continue
        if problem:
            yield _row(track, index, line, channel, problem, detail), EMPTY
            continue
        onset_s, offset_s = max(line.onset_s, 0.0), min(line.offset_s, end_s)
        start, stop = int(round(onset_s * sample_rate)), int(round(offset_s * sample_rate))
        if stop <= start:
            yield _row(track, index, line, channel, BEYOND_END,
                       f"line {line.line}: {line.onset_s}-{line.offset_s} s lies beyond the end of the audio "
                       f"({end_s:.3f} s)"), EMPTY
            continue
        note = detail
        if (onset_s, offset_s) != (line.onset_s, line.offset_s):
            note = f"clipped to the audio ({line.onset_s}-{line.offset_s} s -> {onset_s}-{offset_s:.6f} s)"
        clipped = dataclasses.replace(line, onset_s=onset_s, offset_s=offset_s)
        yield _row(track, index, clipped, channel, "ok", note), y[start:stop]


def iter_segments(audio: str | Path, labels: str | Path = "", label_format: str = "auto", sample_rate: int = 22050,
                  channel: int = 0, highpass_hz: float = 0.0, *, highpass_order: int = 5,
                  include_skipped: bool = False,
                  inventory: Inventory | None = None) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """Cut segments of every matched recording: (row dict, waveform (n,) float32, not padded).

    audio: folder of recordings; labels: folder of tracks or one CSV (default: audio).
    Only `ok` segments unless include_skipped (then skipped ones come with an empty waveform).
    Recordings are read one at a time, so memory holds one recording.

    >>> for row, y in iter_segments("demo/audio", sample_rate=22050, highpass_hz=1500):  # doctest: +SKIP
    ...     print(row["segment_id"], row["label"], y.shape)
    """
    inventory = inventory or collect(audio, labels, label_format)
    for track in inventory.tracks:
        for row, y in cut_track(track, sample_rate=sample_rate, channel=channel, highpass_hz=highpass_hz,
                                highpass_order=highpass_order):
            if include_skipped or row["status"] == "ok":
                yield row, y
