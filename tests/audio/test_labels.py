"""Label tracks: Audacity, Raven, CSV; bad lines kept with a reason; matching by stem."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from nscnet.audio.labels import collect, detect_format, read_audacity, read_label_csv, read_raven, track_stem
from nscnet.config import DataError

AUDACITY = (
    "0.5\t1.25\tA\n"
    "\t2000.0\t6000.0\n"            # frequency line of the previous label
    "\\\t1000\t2000\n"              # old-style frequency line
    "\n"
    "1.5\t2.0\tsong with spaces\tand a tab\n"
    "2,5\t3,0\tcomma decimals\n"
    "abc\t3.0\tX\n"                 # not numeric
    "4.0\t4.0\tY\n"                 # offset == onset
    "5.0\t4.5\tZ\n"                 # offset < onset
    "6.0\t7.0\n"                    # no label
    "nan\t8.0\tN\n"                 # not finite
)


def test_audacity_track(tmp_path):
    path = tmp_path / "rec.txt"
    path.write_text(AUDACITY)
    lines = read_audacity(path)
    good = [line for line in lines if not line.problem]
    assert [(line.onset_s, line.offset_s, line.label) for line in good] == [
        (0.5, 1.25, "A"), (1.5, 2.0, "song with spaces\tand a tab"), (2.5, 3.0, "comma decimals"), (6.0, 7.0, "")]
    problems = {line.label: (line.problem, line.line) for line in lines if line.problem}
    assert problems == {"X": ("not_numeric", 7), "Y": ("offset_not_after_onset", 8),
                        "Z": ("offset_not_after_onset", 9), "N": ("not_numeric", 11)}
    assert all("line" in line.detail for line in lines if line.problem)
    assert math.isnan(next(line for line in lines if line.label == "X").onset_s)


RAVEN = (
    "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation\n"
    "1\tWaveform 1\t1\t0.100\t0.400\t0\t0\tA\n"
    "1\tSpectrogram 1\t1\t0.100\t0.400\t1500\t7000\tA\n"
    "2\tWaveform 1\t1\t0.900\t1.300\t0\t0\tB\n"
    "2\tSpectrogram 1\t1\t0.900\t1.300\t1500\t7000\tB\n"
    "3\tSpectrogram 1\t1\t2.000\t1.000\t1500\t7000\tC\n"
)


def test_raven_selection_table(tmp_path):
    path = tmp_path / "rec.Table.1.selections.txt"
    path.write_text(RAVEN)
    assert detect_format(path) == "raven" and track_stem(path) == "rec"
    lines = read_raven(path)
    assert [(line.onset_s, line.offset_s, line.label, line.problem) for line in lines] == [
        (0.1, 0.4, "A", ""), (0.9, 1.3, "B", ""), (2.0, 1.0, "C", "offset_not_after_onset")]


def test_raven_without_time_columns_is_a_data_error(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("Selection\tView\n1\tSpectrogram 1\n")
    with pytest.raises(DataError, match="bad.txt.*Begin Time"):
        read_raven(path)


def test_label_csv(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("audio_file,onset_s,offset_s,label\nsub/a.wav,0.1,0.2,x\nb.flac,0.3,0.5,\"y, z\"\n"
                    "a.wav,oops,0.4,w\n")
    tracks = read_label_csv(path)
    assert sorted(tracks) == ["a", "b"]
    first, second = tracks["a"]
    assert (first.onset_s, first.offset_s, first.label, first.problem) == (0.1, 0.2, "x", "")
    assert (second.label, second.problem, second.line) == ("w", "not_numeric", 4) and math.isnan(second.onset_s)
    assert tracks["b"][0].label == "y, z" and tracks["b"][0].line == 3
    (tmp_path / "nolabel.csv").write_text("audio_file,onset_s,offset_s\na.wav,0,1\n")
    assert read_label_csv(tmp_path / "nolabel.csv")["a"][0].label == ""
    (tmp_path / "bad.csv").write_text("file,start,end\na.wav,0,1\n")
    with pytest.raises(DataError, match="bad.csv.*audio_file"):
        read_label_csv(tmp_path / "bad.csv")


def _recording(path, seconds=1.0):
    sf.write(path, np.zeros(int(seconds * 8000), dtype=np.float32), 8000)


def test_matching_by_stem_reports_unmatched_both_ways(tmp_path):
    audio, labels = tmp_path / "audio", tmp_path / "labels"
    audio.mkdir()
    labels.mkdir()
    for stem in ("a", "b", "c"):
        _recording(audio / f"{stem}.wav")
    (audio / "notes.md").write_text("not a recording")
    (labels / "a.txt").write_text("0.1\t0.2\tx\n")
    (labels / "b.Table.1.selections.txt").write_text(RAVEN)
    (labels / "orphan.txt").write_text("0.1\t0.2\ty\n0.3\t0.4\ty\n")
    inventory = collect(audio, labels)
    by_stem = {t.stem: t for t in inventory.tracks}
    assert sorted(by_stem) == ["a", "b", "orphan"]
    assert by_stem["a"].recording == audio / "a.wav" and by_stem["b"].recording == audio / "b.wav"
    assert [t.stem for t in inventory.tracks_without_recording] == ["orphan"]
    assert [p.name for p in inventory.recordings_without_track] == ["c.wav"]
    assert inventory.n_lines == 1 + 3 + 2


def test_tracks_beside_the_recordings_and_one_csv(tmp_path):
    _recording(tmp_path / "a.wav")
    _recording(tmp_path / "b.flac")
    (tmp_path / "a.txt").write_text("0.1\t0.2\tx\n")
    inventory = collect(tmp_path)  # labels default to the audio folder
    assert [(t.stem, t.recording.name) for t in inventory.tracks] == [("a", "a.wav")]
    assert [p.name for p in inventory.recordings_without_track] == ["b.flac"]
    csv = tmp_path / "all.csv"
    csv.write_text("audio_file,onset_s,offset_s,label\nrecs/a.wav,0.1,0.2,x\nb.flac,0.1,0.3,y\n")
    inventory = collect(tmp_path, csv)
    assert [(t.stem, t.recording.name, len(t.lines)) for t in inventory.tracks] == [("a", "a.wav", 1), ("b", "b.flac", 1)]
    with pytest.raises(DataError, match="label_format=csv"):
        collect(tmp_path, tmp_path, "csv")


def test_missing_folders_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        collect(tmp_path / "nowhere")
    with pytest.raises(DataError, match="missing"):
        collect(tmp_path, tmp_path / "missing")


def test_all_bengalese_finch_tracks_parse_to_the_7652_syllables(bengalese):
    """Label parsing alone over the full real set: every line matched, nothing lost."""
    inventory = collect(bengalese / "recordings", bengalese / "syllables")
    assert len(inventory.tracks) == 135 and not inventory.recordings_without_track
    assert not inventory.tracks_without_recording
    lines = [(t.stem, line) for t in inventory.tracks for line in t.lines]
    assert len(lines) == 7652 and not any(line.problem for _, line in lines)
    table = pd.read_csv(bengalese / "syllables.csv", dtype={"label": str})
    table["stem"] = table["audio_file"].str.replace(r"^.*/|\.wav$", "", regex=True)
    parsed = pd.DataFrame([(stem, line.onset_s, line.offset_s, line.label) for stem, line in lines],
                          columns=["stem", "onset_s", "offset_s", "label"])
    key = ["stem", "onset_s"]
    merged = parsed.sort_values(key).reset_index(drop=True).compare(
        table[["stem", "onset_s", "offset_s", "label"]].sort_values(key).reset_index(drop=True))
    assert merged.empty
    assert parsed["label"].value_counts().to_dict() == {"0": 1930, "5": 1387, "6": 872, "2": 756, "8": 655,
                                                        "1": 625, "3": 477, "4": 477, "7": 473}
    from_csv = collect(bengalese / "recordings", bengalese / "syllables.csv")
    assert from_csv.n_lines == 7652 and not from_csv.tracks_without_recording


TRACK = "0.5\t1.25\tcafé\n1.5\t2.0\tB\n"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-be-bom", "latin-1", "cp1252"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_tracks_in_other_encodings_and_windows_line_ends_read_the_same(tmp_path, encoding, newline):
    def encoded(text: str) -> bytes:
        text = text.replace("\n", newline)
        if encoding == "utf-16-be-bom":
            return b"\xfe\xff" + text.encode("utf-16-be")
        return text.encode(encoding)

    audacity, raven = tmp_path / "rec.txt", tmp_path / "rec.Table.1.selections.txt"
    audacity.write_bytes(encoded(TRACK))
    raven.write_bytes(encoded(RAVEN.replace("\tA\n", "\tcafé\n")))
    assert detect_format(audacity) == "audacity" and detect_format(raven) == "raven"
    assert [(line.onset_s, line.offset_s, line.label, line.problem) for line in read_audacity(audacity)] == [
        (0.5, 1.25, "café", ""), (1.5, 2.0, "B", "")]
    assert [line.label for line in read_raven(raven)] == ["café", "B", "C"]


def test_path_like_and_html_labels_are_kept_as_plain_text(tmp_path):
    labels = ["../../outside", "/etc/passwd", "C:\\Windows\\x", "<script>alert(1)</script>", "a&amp;b"]
    path = tmp_path / "rec.txt"
    path.write_text("".join(f"{i}.0\t{i}.5\t{label}\n" for i, label in enumerate(labels)))
    assert [line.label for line in read_audacity(path)] == labels
