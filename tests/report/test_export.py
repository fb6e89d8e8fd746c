"""Exports for biologists: assignments.csv, Audacity label tracks, Raven selection tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nscnet.config import DataError
from nscnet.images.dataset import read_dataset
from nscnet.report.export import cluster_names, safe_stem, write_exports
from tests.fixtures_cluster import make_blob_dataset


@pytest.fixture
def dataset(tmp_path):
    return read_dataset(make_blob_dataset(tmp_path / "ds", classes=3, per_class=4, recordings=2, skipped=2))


def test_assignments_csv_has_one_row_per_ok_segment(tmp_path, dataset):
    labels = np.arange(len(dataset)) % 3
    labels[0] = -1
    out = write_exports(tmp_path / "out", dataset.segments, labels)
    table = pd.read_csv(out / "assignments.csv", dtype={"segment_id": str})
    assert list(table.columns) == ["segment_id", "recording", "onset_s", "offset_s", "cluster"]
    assert list(table["segment_id"]) == list(dataset.segments["segment_id"])
    assert list(table["cluster"]) == list(labels)


def test_one_audacity_track_and_raven_table_per_recording(tmp_path, dataset):
    labels = np.arange(len(dataset)) % 3
    labels[0] = -1
    out = write_exports(tmp_path / "out", dataset.segments, labels, all_segments=dataset.all_segments)
    # recordings "site 0/rec_0.wav" and "site 1/rec_1.wav": sanitised, no subfolder, no space
    assert sorted(p.name for p in (out / "audacity").iterdir()) == ["site_0__rec_0.txt", "site_1__rec_1.txt"]
    assert sorted(p.name for p in (out / "raven").iterdir()) == [
        "site_0__rec_0.Table.1.selections.txt", "site_1__rec_1.Table.1.selections.txt"]
    track = pd.read_csv(out / "audacity" / "site_0__rec_0.txt", sep="\t", header=None, names=["on", "off", "label"])
    assert track["on"].is_monotonic_increasing
    ok_rows = dataset.segments[dataset.segments["recording"] == "site 0/rec_0.wav"]
    skipped_rows = dataset.all_segments[(dataset.all_segments["status"] != "ok")
                                        & (dataset.all_segments["recording"] == "site 0/rec_0.wav")]
    assert len(track) == len(ok_rows) + len(skipped_rows)
    assert set(track["label"]) == {"noise", "cluster_01", "cluster_02", "cluster_00", "skipped"}
    raven = pd.read_csv(out / "raven" / "site_0__rec_0.Table.1.selections.txt", sep="\t")
    assert list(raven.columns[:5]) == ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)"]
    assert list(raven["Selection"]) == list(range(1, len(track) + 1))
    assert (raven["Channel"] == 1).all()


def test_cluster_names_are_zero_padded_to_the_largest_id():
    assert list(cluster_names(np.array([7, 3, -1]))) == ["cluster_07", "cluster_03", "noise"]
    assert list(cluster_names(np.array([7, 1234]))) == ["cluster_0007", "cluster_1234"]


@pytest.mark.parametrize("name, stem", [
    ("recordings/0.wav", "recordings__0"),
    ("../../etc/passwd", "etc__passwd"),
    ("/abs/path/Bird 1.FLAC", "abs__path__Bird_1"),
    ("..", "recording"),
    ("a\\b:c*?.mp3", "a__b_c"),
])
def test_recording_names_never_escape_the_export_folder(name, stem):
    assert safe_stem(name) == stem


def test_hostile_and_colliding_recording_names_stay_inside(tmp_path):
    segments = pd.DataFrame({"segment_id": ["a", "b", "c"], "recording": ["../x.wav", "x", "x.wav"],
                             "onset_s": [0.0, 1.0, 2.0], "offset_s": [0.5, 1.5, 2.5]})
    out = write_exports(tmp_path / "out", segments, np.array([0, 1, 2]))
    files = sorted(p.name for p in (out / "audacity").iterdir())
    assert len(files) == 3 and all(p.resolve().parent == (out / "audacity").resolve() for p in (out / "audacity").iterdir())
    assert not (tmp_path / "x.txt").exists()


def test_label_count_must_match_segments(tmp_path, dataset):
    with pytest.raises(DataError, match="3 cluster labels for 12 segments"):
        write_exports(tmp_path / "out", dataset.segments, np.zeros(3))
