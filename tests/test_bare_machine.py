"""A step on a bare machine (issue 12): no Chrome/Chromium anywhere, or one that never answers.

The step must end, log its HTML figures and say once how to get PNGs. The browser is hidden
for real (tests/fixtures_bare.py: a mount namespace where kaleido finds none); .ci/run also runs
this file inside that namespace. The subprocess timeouts are the bound under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

from nscnet.runs import tracking as trk
from tests.conftest import ROOT, require
from tests.fixtures_bare import hiding_prefix
from tests.fixtures_cluster import make_blob_dataset

FIGURES = ("lda_2d", "cluster_sizes", "contingency")
STEP_LIMIT_S = 300  # the whole step, with PNG given up; it takes seconds


def _basenet(cwd: Path, data: Path, *, prefix: list[str], env: dict[str, str] | None = None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    env.pop("NSCNET_FIGURE_PNG", None)  # PNG export on, as for a new user
    command = [*prefix, sys.executable, "-m", "nscnet", "basenet", "--data", str(data), "--k", "3",
               "--pca_dim", "8", "--truth", "true"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_LIMIT_S)


def _figures_of_the_run(stdout: str) -> set[str]:
    run_id = next(line.split("=", 1)[1] for line in stdout.splitlines() if line.startswith("run_id="))
    return set(trk.list_artifacts(run_id, "figures"))


def _png_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "PNG copies of figures are off" in line]


def test_a_step_with_no_browser_anywhere_ends_with_html_figures_and_one_warning(tracking, tmp_path):
    prefix = hiding_prefix()
    require(prefix is not None, "Chromium is installed and only root can hide it (unshare -m)")
    data = make_blob_dataset(tmp_path / "ds", classes=3, per_class=20)
    done = _basenet(tmp_path, data, prefix=prefix)
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = _png_warnings(done.stderr)
    assert len(warnings) == 1, done.stderr[-3000:]  # once for the process, not once per figure
    assert "no Chrome or Chromium found" in warnings[0]
    assert "apt-get install chromium" in warnings[0] and "NSCNET_FIGURE_PNG=false" in warnings[0]
    files = _figures_of_the_run(done.stdout)
    assert {f"figures/{name}.html" for name in FIGURES} <= files
    assert not [f for f in files if f.endswith(".png")]


def test_a_browser_that_never_answers_is_given_up_and_killed(tracking, tmp_path):
    hung = tmp_path / "hung-browser"
    hung.write_text("#!/bin/sh\necho started >> \"$0.started\"\nexec sleep 100000\n")
    hung.chmod(0o755)
    data = make_blob_dataset(tmp_path / "ds", classes=3, per_class=20)
    # a shorter start limit than the default (trk.PNG_START_S) keeps the test short
    done = _basenet(tmp_path, data, prefix=[], env={"BROWSER_PATH": str(hung), trk.PNG_START_ENV: "4"})
    assert done.returncode == 0, done.stderr[-3000:]
    # it really was started, and tried again once after the first try was killed
    assert Path(f"{hung}.started").read_text().split() == ["started"] * trk.PNG_START_TRIES
    warnings = _png_warnings(done.stderr)
    assert len(warnings) == 1 and "did not answer within 4 s" in warnings[0], done.stderr[-3000:]
    files = _figures_of_the_run(done.stdout)
    assert {f"figures/{name}.html" for name in FIGURES} <= files
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if str(hung) in " ".join(p.info["cmdline"] or [])]
    assert left == []  # the browser's whole process group is gone


def test_with_a_browser_the_pngs_are_made(tracking, tmp_path):
    require(trk.find_browser() is not None, "Chromium (Debian package chromium) for kaleido's PNG export")
    data = make_blob_dataset(tmp_path / "ds", classes=3, per_class=20)
    done = _basenet(tmp_path, data, prefix=[])
    assert done.returncode == 0, done.stderr[-3000:]
    assert _png_warnings(done.stderr) == []
    files = _figures_of_the_run(done.stdout)
    assert {f"figures/{name}.{ext}" for name in FIGURES for ext in ("html", "png")} <= files
    weight = sum(p.stat().st_size for p in (tmp_path / "mlartifacts").rglob("figures/*") if p.is_file())
    print(f"figures of one basenet run: {len(files)} files, {weight / 1e6:.1f} MB")
