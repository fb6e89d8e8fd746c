"""`nscnet report`, `nscnet curate` and the per-unit export, on a real BASENet run over synthetic
songs (a real MLflow store, real audio, a real headless Chromium for the page)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from nscnet.config import BasenetConfig, CurateConfig, DataError, ReportConfig
from nscnet.models.basenet import run_basenet
from nscnet.report import build_report, gather, run_report
from nscnet.report.curate import apply_edits, run_curate
from nscnet.runs import tracking
from tests.conftest import ROOT, require
from tests.fixtures_audio import make_synthetic_dataset

K = 4
CONTEXT = 0.2


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A synthetic dataset (4 song types, 2 recordings) and a BASENet k=4 run in its own MLflow store."""
    root = tmp_path_factory.mktemp("report")
    dataset = make_synthetic_dataset(root, synth=dict(types=K, songs=40, recordings=2, seed=3),
                                     images=dict(duration_s=3.0, n_mels=32, frames=48))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("NSCNET_FIGURE_PNG", "false")
        metrics = run_basenet(BasenetConfig(data=str(dataset), k=K, pca_dim=16, whiten=False, l2=False, truth=True,
                                            stability_runs=0, figures=False))
        yield {"root": root, "dataset": dataset, "run_id": metrics["run_id"], "mp": mp}


@pytest.fixture
def inside(store, monkeypatch):
    monkeypatch.chdir(store["root"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store['root'] / 'mlflow.db'}")
    monkeypatch.setenv("NSCNET_FIGURE_PNG", "false")
    return store


class Collect(HTMLParser):
    """Sections, images and audio sources of a page, with their attributes."""

    def __init__(self):
        super().__init__()
        self.sections, self.images, self.audio, self.figures = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and "cluster" in (attrs.get("class") or ""):
            self.sections.append(attrs)
        elif tag == "img" and attrs.get("src"):
            self.images.append(attrs)
        elif tag == "audio" and attrs.get("src"):
            self.audio.append(attrs)
        elif tag == "figure" and "exemplar" in (attrs.get("class") or ""):
            self.figures.append(attrs)


def _payload(uri: str) -> bytes:
    head, data = uri.split(",", 1)
    assert head.endswith(";base64")
    return base64.b64decode(data)


def _report(store, tmp_path, **changes):
    cfg = ReportConfig(run_id=store["run_id"], out=str(tmp_path / "out"), exemplars=3, atypical=1,
                       context_s=CONTEXT, **changes)
    return run_report(cfg), cfg


def test_report_has_a_section_per_cluster_decodable_images_and_audio_of_the_expected_length(inside, tmp_path):
    from PIL import Image

    facts, cfg = _report(inside, tmp_path)
    page = Path(facts["path"]).read_text()
    parsed = Collect()
    parsed.feed(page)
    labels = pd.read_csv(tracking.download_artifact(inside["run_id"], "assignments.csv", tmp_path))["cluster"]
    assert sorted(int(s["data-cluster"]) for s in parsed.sections) == sorted(set(labels) - {-1})
    assert len(parsed.sections) == K
    for image in parsed.images:
        Image.open(io.BytesIO(_payload(image["src"]))).load()  # every image decodes
    assert len(parsed.images) >= K * (3 + 1 + 1)  # exemplars + average per cluster (+ the map atlas)
    sizes = labels[labels >= 0].value_counts()
    assert len(parsed.audio) == len(parsed.figures) == sum(min(n, 3) + min(max(n - 3, 0), 1) for n in sizes)
    segments = pd.read_csv(inside["dataset"] / "segments.csv", dtype={"segment_id": str})
    ok = segments[segments["status"] == "ok"].sort_values("row").reset_index(drop=True)
    audio_dir = inside["dataset"].parent / "audio"
    for figure, audio in zip(parsed.figures, parsed.audio):
        seg = ok.iloc[int(figure["data-row"])]
        length = sf.info(str(audio_dir / seg["recording"])).duration
        expected = min(seg["offset_s"] + CONTEXT, length) - max(seg["onset_s"] - CONTEXT, 0)
        data, rate = sf.read(io.BytesIO(_payload(audio["src"])))
        assert abs(len(data) / rate - expected) < 0.01, (len(data) / rate, expected)
        assert np.abs(data).max() > 0.1  # sound, not silence
    assert facts["audio"].startswith(("Ogg Vorbis at 16000 Hz", "16-bit WAV"))
    assert tracking.list_artifacts(inside["run_id"], "report") == ["report/report.html"]
    assert tracking.get_run(inside["run_id"]).data.tags["nscnet.step"] == "basenet"  # the run is left as it was


def test_exemplars_are_the_members_nearest_their_cluster_centre(inside, tmp_path):
    space = np.load(tracking.download_artifact(inside["run_id"], "clustered.npy", tmp_path)).astype(np.float32)
    labels = pd.read_csv(tracking.download_artifact(inside["run_id"], "assignments.csv", tmp_path))["cluster"].to_numpy()
    page, _ = build_report(ReportConfig(run_id=inside["run_id"], out=str(tmp_path / "o"), exemplars=3, atypical=2))
    parsed = Collect()
    parsed.feed(page)
    for c in set(labels) - {-1}:
        members = np.flatnonzero(labels == c)
        distance = np.linalg.norm(space[members] - space[members].mean(axis=0), axis=1)
        order = members[np.argsort(distance)]
        nearest, farthest = order[:3], order[3:][::-1][:2]  # the least typical are not among the typical
        shown = [f for f in parsed.figures if int(f["data-row"]) in set(members)]
        typical = [int(f["data-row"]) for f in shown if "typical" in f["class"].split()]
        atypical = [int(f["data-row"]) for f in shown if "atypical" in f["class"].split()]
        assert typical == list(nearest)
        assert set(atypical) == set(farthest)


def test_exemplar_choice_is_by_distance_to_the_centre():
    space = np.array([[0.0], [1.0], [-1.0], [10.0], [20.0], [21.0]])
    labels = np.array([0, 0, 0, 0, 1, 1])
    chosen = gather.exemplars(space, labels, np.array([0, 1]), n_typical=2, n_atypical=1)
    assert list(chosen[0][0]) == [1, 0]  # centre 2.5: rows 1 (1.5 away) and 0 (2.5)
    assert list(chosen[0][1]) == [3]  # 7.5 away
    assert list(chosen[1][0]) == [4, 5] and list(chosen[1][1]) == []  # nothing left to be atypical


@pytest.mark.parametrize("codec, rate, expected_rate", [("opus", 22050, 24000), ("vorbis", 16000, 16000),
                                                        ("wav", 0, 22050)])
def test_clips_decode_at_the_stated_rate_and_length(codec, rate, expected_rate):
    from nscnet.report import media

    y = np.sin(np.arange(11025) * 0.3).astype(np.float32)  # 0.5 s at 22050 Hz
    fmt = media.choose_format(codec, rate)
    payload, written = media.encode(y, 22050, fmt)
    data, decoded_rate = sf.read(io.BytesIO(payload))
    assert written == decoded_rate == expected_rate
    assert abs(len(data) / decoded_rate - 0.5) < 0.005


def test_report_opens_offline_in_headless_chromium_with_sections_images_and_playable_audio(inside, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    require(chromium is not None, "Chromium (Debian package chromium) for the headless page test")
    facts, _ = _report(inside, tmp_path)
    probe = tmp_path / "probe.html"
    # the test's script, after the report's own: counts what the browser decoded and can play
    script = """<script>
    window.addEventListener("load", function(){
      var audio = Array.from(document.querySelectorAll("audio[src]"));
      var waits = audio.map(function(a){ return new Promise(function(ok){
        if (a.readyState >= 1) return ok(); a.addEventListener("loadedmetadata", ok); a.addEventListener("error", ok);
        a.load(); }); });
      Promise.all(waits).then(function(){
        var out = {sections: document.querySelectorAll("section.cluster").length,
          images: Array.from(document.images).filter(function(i){ return i.complete && i.naturalWidth > 0; }).length,
          images_all: document.images.length,
          playable: audio.filter(function(a){ return a.readyState >= 1 && a.duration > 0 && !a.error; }).length,
          audio: audio.length, names: document.querySelectorAll("input.name").length,
          download: !!document.getElementById("download-names")};
        var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
        document.body.appendChild(pre);
      });
    });
    </script>"""
    probe.write_text(Path(facts["path"]).read_text().replace("</body>", script + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             "--autoplay-policy=no-user-gesture-required"]
    dom = subprocess.run([chromium, *flags, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not [line for line in console if re.search(r"error|uncaught", line, re.I)], console
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout)
    assert found, dom.stdout[-2000:]
    counts = json.loads(found.group(1).replace("&quot;", '"'))
    assert counts["sections"] == K
    assert counts["images"] == counts["images_all"] >= K * 5
    assert counts["playable"] == counts["audio"] == facts["audio_clips"] >= K * 2
    assert counts["names"] == K and counts["download"]  # the curation fields and the names.csv button
    artifacts = Path(os.environ.get("NSCNET_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "report-page.png"
    subprocess.run([chromium, *flags, "--window-size=1200,1800", "--virtual-time-budget=5000",
                    f"--screenshot={shot}", Path(facts["path"]).as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
    print(f"screenshot of the report: {shot}")


def test_curation_merges_renames_drops_and_reruns_zipf(inside, tmp_path):
    result = run_curate(CurateConfig(run_id=inside["run_id"], merge="0,1", rename="2=trill", out=str(tmp_path / "c"),
                                     bootstrap=50))
    table = pd.read_csv(tmp_path / "c" / "assignments.csv")
    parent = pd.read_csv(tracking.download_artifact(inside["run_id"], "assignments.csv", tmp_path))
    assert set(table["cluster"]) == {0, 2, 3}  # 0 and 1 merged into one
    assert (table.loc[parent["cluster"].isin([0, 1]), "cluster"] == 0).all()
    assert (table.loc[parent["cluster"] == 2, "name"] == "trill").all()
    tracks = "".join(p.read_text() for p in (tmp_path / "c" / "audacity").glob("*.txt"))
    assert "\ttrill\n" in tracks and "cluster_01" not in tracks
    run = tracking.get_run(result["run_id"])
    assert run.data.tags["nscnet.parent_run"] == inside["run_id"]
    assert run.data.metrics["n_clusters"] == 3 and run.data.metrics["parent_n_clusters"] == K
    assert run.data.metrics["changed_segments"] == int((parent["cluster"] == 1).sum())
    assert run.data.tags["nscnet.zipf_run"] == result["zipf_run"]  # Zipf re-run on the curated types
    assert tracking.get_run(result["zipf_run"]).data.metrics["zipf_s"] >= 0
    assert sorted(tracking.list_artifacts(result["run_id"], "audacity"))


def test_names_csv_merges_equal_names_and_drops_noise():
    labels = np.array([0, 1, 2, 3, 3])
    out, names = apply_edits(labels, {c: f"cluster_{c:02d}" for c in range(4)},
                             table_names={0: "a", 1: "a", 2: "noise", 3: "b,c"})
    assert list(out) == [0, 0, -1, 3, 3]
    assert names[0] == "a" and names[3] == "b,c"


def test_a_names_csv_from_the_report_curates_the_run(inside, tmp_path):
    names = tmp_path / "names.csv"
    names.write_text('cluster,name\n0,"trill, long"\n1,"trill, long"\n2,noise\n3,cluster_03\n')
    result = run_curate(CurateConfig(run_id=inside["run_id"], names=str(names), out=str(tmp_path / "c"), zipf=False))
    parent = pd.read_csv(tracking.download_artifact(inside["run_id"], "assignments.csv", tmp_path))
    table = pd.read_csv(tmp_path / "c" / "assignments.csv", keep_default_na=False)
    assert set(table.loc[parent["cluster"].isin([0, 1]), "name"]) == {"trill, long"}
    assert (table.loc[parent["cluster"] == 2, "cluster"] == -1).all()
    assert result["n_clusters"] == 2


def test_an_audacity_edit_comes_back_as_exactly_that_change(inside, tmp_path):
    folder = tmp_path / "edited"
    tracking.download_artifact(inside["run_id"], "audacity", tmp_path)
    shutil.copytree(tmp_path / "audacity", folder)
    track = sorted(folder.glob("*.txt"))[0]
    lines = track.read_text().splitlines()
    onset, offset, name = lines[1].split("\t")
    other = next(n for n in (line.split("\t")[2] for line in lines) if n != name and n != "noise")
    lines[1] = f"{onset}\t{offset}\t{other}"
    track.write_text("\n".join(lines) + "\n")
    result = run_curate(CurateConfig(run_id=inside["run_id"], audacity=str(folder), out=str(tmp_path / "a"),
                                     zipf=False))
    parent = pd.read_csv(tracking.download_artifact(inside["run_id"], "assignments.csv", tmp_path))
    curated = pd.read_csv(tmp_path / "a" / "assignments.csv")
    changed = np.flatnonzero(parent["cluster"].to_numpy() != curated["cluster"].to_numpy())
    assert len(changed) == 1 and result["changed_segments"] == 1
    row = parent.iloc[changed[0]]
    assert abs(row["onset_s"] - float(onset)) < 1e-5
    assert curated.iloc[changed[0]]["cluster"] == int(other.split("_")[1])
    assert result["nmi_parent"] < 1.0


def test_html_in_a_cluster_name_is_shown_as_text(inside, tmp_path):
    evil = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    result = run_curate(CurateConfig(run_id=inside["run_id"], rename=f"3={evil}", out=str(tmp_path / "c"), zipf=False))
    page, _ = build_report(ReportConfig(run_id=result["run_id"], out=str(tmp_path / "o"), exemplars=1, atypical=0))
    assert evil not in page and "<script>alert" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S).group(1)
    assert evil in json.loads(data)["names"]  # in the page's data, '<' escaped, shown with textContent


def test_units_are_written_one_folder_per_cluster_with_sidecars(inside, tmp_path):
    result = run_curate(CurateConfig(run_id=inside["run_id"], rename="0=a/../b", out=str(tmp_path / "c"), zipf=False,
                                     units=True))
    units = tmp_path / "c" / "units"
    wavs = sorted(units.rglob("*.wav"))
    assert len(wavs) == result["units_written"] == len(pd.read_csv(tmp_path / "c" / "assignments.csv"))
    assert all(w.parent.parent == units for w in wavs)  # one level: no path from the name
    for wav in wavs[:10]:
        meta = json.loads(wav.with_suffix(".json").read_text())
        assert set(meta) >= {"recording", "onset_s", "offset_s", "cluster", "name"}
        assert abs(sf.info(str(wav)).duration - (meta["offset_s"] - meta["onset_s"])) < 1e-3
    assert {w.parent.name for w in wavs} >= {"a__b"}


def test_cli_names_a_bad_run_and_exits_1(inside):
    done = subprocess.run([sys.executable, "-m", "nscnet", "report", "--run_id", "nope"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert "nope" in done.stderr.strip().splitlines()[-1]
    with pytest.raises(DataError, match="cluster 99"):
        run_curate(CurateConfig(run_id=inside["run_id"], drop="99", zipf=False, out="unused"))


def test_minutes_of_audio_encode_as_ogg_without_crashing_the_process():
    # one libsndfile write of a 4-minute recording as Ogg Vorbis killed the process (SIGSEGV,
    # `make demo`'s map audio); encode writes in blocks. In a child process: a crash fails the test only
    code = ("import io, numpy as np, soundfile as sf\n"
            "from nscnet.report.media import AudioFormat, encode\n"
            "y = np.random.default_rng(0).standard_normal(16000 * 240).astype('float32') * 0.1\n"
            "data, rate = encode(y, 16000, AudioFormat('vorbis', 16000))\n"
            "back, r = sf.read(io.BytesIO(data))\n"
            "print(rate, r, len(back))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rate, read_rate, frames = map(int, done.stdout.split())
    assert rate == read_rate == 16000 and abs(frames - 16000 * 240) < 16000
