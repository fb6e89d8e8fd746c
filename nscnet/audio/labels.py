"""Label tracks: reading Audacity tracks, Raven selection tables and one CSV, and matching them
to recordings by file stem.

A track is matched to the recording with the same stem (`rec1.wav` <-> `rec1.txt`, or Raven's
`rec1.Table.1.selections.txt`), in the audio folder or in a separate labels folder. A CSV
(`audio_file,onset_s,offset_s[,label]`) names the recording in `audio_file`; only its stem is
used. Label text is never used to build a path. Bad lines are kept, with a `problem` code,
so that they appear as skipped segments in segments.csv instead of being lost.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from nscnet.audio.io import is_audio_file
from nscnet.config import DataError

log = logging.getLogger(__name__)

LABEL_FORMATS = ("auto", "audacity", "raven", "csv")
RAVEN_LABEL_COLUMNS = ("Annotation", "Label", "label", "Type", "Call Type", "Species", "Class")
_RAVEN_SUFFIX = re.compile(r"\.Table\.\d+\.selections$", re.IGNORECASE)

NOT_NUMERIC = "not_numeric"
OFFSET_NOT_AFTER_ONSET = "offset_not_after_onset"


@dataclass
class LabelLine:
    """One line of a label track. `line` is 1-based in its file; `problem` is '' or a status code."""

    line: int
    onset_s: float
    offset_s: float
    label: str
    problem: str = ""
    detail: str = ""


@dataclass
class Track:
    """The labelled segments of one recording. `recording` is None when no recording matched."""

    stem: str
    recording: Path | None
    source: Path  # the label file (or the CSV) the lines came from
    lines: list[LabelLine] = field(default_factory=list)


@dataclass
class Inventory:
    """Every track, matched or not, and the recordings that have no track."""

    tracks: list[Track]
    recordings_without_track: list[Path]

    @property
    def tracks_without_recording(self) -> list[Track]:
        return [t for t in self.tracks if t.recording is None]

    @property
    def n_lines(self) -> int:
        return sum(len(t.lines) for t in self.tracks)


def _number(text: str) -> float:
    """A finite float from label text; ValueError otherwise (`1,5` is read as 1.5)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        value = float(text.replace(",", "."))
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def make_line(line: int, onset: str, offset: str, label: str) -> LabelLine:
    """Parse one segment's onset/offset text; a bad one becomes a line with a problem code."""
    try:
        onset_s, offset_s = _number(onset), _number(offset)
    except ValueError:
        return LabelLine(line, math.nan, math.nan, label, NOT_NUMERIC,
                         f"line {line}: onset/offset not numeric: {onset!r}, {offset!r}")
    if offset_s <= onset_s:
        return LabelLine(line, onset_s, offset_s, label, OFFSET_NOT_AFTER_ONSET,
                         f"line {line}: offset {offset_s} <= onset {onset_s}")
    return LabelLine(line, onset_s, offset_s, label)


_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def decode_track(data: bytes) -> tuple[str, str]:
    """(text, encoding) of a label track's bytes: UTF-8 or UTF-16 by their byte-order mark,
    else UTF-8, else Windows-1252 (what Raven and Excel write on Windows), else Latin-1 (which
    decodes any byte). Windows line ends are left to `splitlines`."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace"), encoding
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1"), "latin-1"


def _read_text(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read label track ({exc})") from None
    text, encoding = decode_track(data)
    if encoding not in ("utf-8", "utf-8-sig"):
        log.info("label track %s read as %s", path, encoding)
    return text.splitlines()


def read_audacity(path: str | Path) -> list[LabelLine]:
    """Audacity label track: `onset<TAB>offset<TAB>label` per line.

    Frequency lines (starting with a tab or a backslash) and blank lines are ignored.
    """
    lines = []
    for number, raw in enumerate(_read_text(Path(path)), start=1):
        if not raw.strip() or raw.startswith(("\t", "\\")):
            continue
        parts = raw.split("\t")
        if len(parts) < 2:
            parts = raw.split(None, 2)
        if len(parts) < 2:
            lines.append(LabelLine(number, math.nan, math.nan, "", NOT_NUMERIC,
                                   f"line {number}: expected onset<TAB>offset<TAB>label, got {raw[:60]!r}"))
            continue
        label = "\t".join(parts[2:]).strip()
        lines.append(make_line(number, parts[0], parts[1], label))
    return lines


def read_raven(path: str | Path) -> list[LabelLine]:
    """Raven selection table (tab-separated, header `Selection  View  Channel  Begin Time (s) ...`).

    Raven writes each selection once per view; the spectrogram view's row is kept. The label
    is the first column named like an annotation (Annotation, Label, Type, Species, ...).
    """
    path = Path(path)
    rows = list(csv.reader(_read_text(path), delimiter="\t"))
    if not rows:
        return []
    header = [h.strip() for h in rows[0]]
    for needed in ("Begin Time (s)", "End Time (s)"):
        if needed not in header:
            raise DataError(f"{path}: not a Raven selection table (no {needed!r} column)")
    begin, end = header.index("Begin Time (s)"), header.index("End Time (s)")
    label_col = next((header.index(c) for c in RAVEN_LABEL_COLUMNS if c in header), None)
    view = header.index("View") if "View" in header else None
    selection = header.index("Selection") if "Selection" in header else None
    has_spectrogram = view is not None and any(len(r) > view and r[view].startswith("Spectrogram") for r in rows[1:])
    lines, seen = [], set()
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if has_spectrogram and len(row) > view and not row[view].startswith("Spectrogram"):
            continue
        if selection is not None and len(row) > selection:
            if row[selection] in seen:
                continue
            seen.add(row[selection])
        cell = lambda i: row[i] if i is not None and i < len(row) else ""  # noqa: E731
        lines.append(make_line(number, cell(begin), cell(end), cell(label_col).strip()))
    return lines


def read_label_csv(path: str | Path) -> dict[str, list[LabelLine]]:
    """One CSV `audio_file,onset_s,offset_s[,label]` -> {recording stem: lines} (line = CSV line number)."""
    path = Path(path)
    rows = list(csv.reader(_read_text(path)))
    if not rows:
        raise DataError(f"{path}: empty label CSV")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in ("audio_file", "onset_s", "offset_s") if c not in header]
    if missing:
        raise DataError(f"{path}: label CSV lacks column(s) {', '.join(missing)} "
                        f"(expected audio_file,onset_s,offset_s[,label])")
    col = {name: header.index(name) for name in header}
    out: dict[str, list[LabelLine]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cell = lambda name: row[col[name]] if name in col and col[name] < len(row) else ""  # noqa: E731
        stem = Path(cell("audio_file").strip().replace("\\", "/")).stem
        out.setdefault(stem, []).append(make_line(number, cell("onset_s"), cell("offset_s"), cell("label").strip()))
    return out


def detect_format(path: Path) -> str:
    """`csv` for .csv files, `raven` for a table whose header starts with `Selection`, else `audacity`."""
    if path.suffix.lower() == ".csv":
        return "csv"
    lines = _read_text(path)
    first = lines[0] if lines else ""
    return "raven" if first.startswith("Selection\t") or "Begin Time (s)" in first else "audacity"


def track_stem(path: Path) -> str:
    """`rec1.txt` -> `rec1`; Raven's `rec1.Table.1.selections.txt` -> `rec1`."""
    return _RAVEN_SUFFIX.sub("", path.stem)


def list_recordings(audio: str | Path) -> dict[str, Path]:
    """{stem: path} of the recordings in a folder (not recursive); a duplicated stem keeps the first."""
    audio = Path(audio)
    if not audio.is_dir():
        raise DataError(f"audio folder {audio} does not exist or is not a folder")
    found: dict[str, Path] = {}
    for path in sorted(audio.iterdir()):
        if not is_audio_file(path):
            continue
        if path.stem in found:
            log.warning("%s and %s share the stem %r: using %s", found[path.stem].name, path.name,
                        path.stem, found[path.stem].name)
            continue
        found[path.stem] = path
    return found


def collect(audio: str | Path, labels: str | Path = "", label_format: str = "auto") -> Inventory:
    """Match label tracks to recordings by stem.

    audio: folder of recordings; labels: folder of tracks, or one CSV / one track file
    (default: the audio folder). Unmatched recordings and tracks are reported in the result,
    never fatal.
    """
    if label_format not in LABEL_FORMATS:
        raise DataError(f"label_format={label_format!r} is not one of {', '.join(LABEL_FORMATS)}")
    recordings = list_recordings(audio)
    labels_path = Path(labels) if str(labels) else Path(audio)
    if not labels_path.exists():
        raise DataError(f"labels {labels_path} do not exist")
    per_stem: dict[str, tuple[Path, list[LabelLine]]] = {}
    if labels_path.is_file():
        fmt = detect_format(labels_path) if label_format == "auto" else label_format
        if fmt == "csv":
            per_stem = {stem: (labels_path, lines) for stem, lines in read_label_csv(labels_path).items()}
        else:
            reader = read_raven if fmt == "raven" else read_audacity
            per_stem = {track_stem(labels_path): (labels_path, reader(labels_path))}
    else:
        if label_format == "csv":
            raise DataError(f"label_format=csv needs labels to name one CSV file, not the folder {labels_path}")
        files = sorted(p for p in labels_path.iterdir()
                       if p.is_file() and p.suffix.lower() == ".txt" and not p.name.startswith("."))
        for path in files:
            fmt = detect_format(path) if label_format == "auto" else label_format
            reader = read_raven if fmt == "raven" else read_audacity
            stem = track_stem(path)
            if stem in per_stem:
                log.warning("two label tracks for %r: %s and %s; using %s", stem, per_stem[stem][0].name,
                            path.name, per_stem[stem][0].name)
                continue
            per_stem[stem] = (path, reader(path))
    tracks = [Track(stem, recordings.get(stem), source, lines) for stem, (source, lines) in sorted(per_stem.items())]
    without_track = [path for stem, path in recordings.items() if stem not in per_stem]
    for track in tracks:
        if track.recording is None:
            log.warning("label track %s (%d segments) has no recording %s.* in %s",
                        track.source.name if track.source.suffix.lower() != ".csv" else f"{track.source.name}:{track.stem}",
                        len(track.lines), track.stem, audio)
    if without_track:
        log.warning("%d recording(s) without a label track, e.g. %s", len(without_track), without_track[0].name)
    return Inventory(tracks, without_track)
