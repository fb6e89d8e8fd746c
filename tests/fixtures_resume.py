"""Helpers of the kill-and-resume tests: launch a real training process, watch its checkpoints."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import torch

from tests.conftest import ROOT


def launch(step: str, store: Path, *args: str, runs_dir: Path | None = None) -> subprocess.Popen:
    """`python -m nscnet <step> ...` in `store`, its local checkpoints under `runs_dir`
    (default store/kill-checkpoints)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "NSCNET_FIGURE_PNG": "false",
           "NSCNET_PROGRESS": "0", "NSCNET_RUNS_DIR": str(runs_dir or store / "kill-checkpoints")}
    return subprocess.Popen([sys.executable, "-m", "nscnet", step, *args], cwd=store, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def checkpoint_epoch(folder: Path) -> tuple[str, int] | None:
    """(run folder name, epoch) of the newest checkpoint under `folder`, or None."""
    for path in folder.glob("*/checkpoint.pt"):
        try:
            return path.parent.name, int(torch.load(path, weights_only=True)["epoch"])
        except Exception:  # replaced while being read: try again
            return None
    return None


def kill_after_epochs(process: subprocess.Popen, folder: Path, epochs: int, timeout: float = 240) -> str:
    """SIGKILL `process` as soon as a checkpoint under `folder` records `epochs` finished epochs;
    returns the killed run's id (asserting the process died by that signal)."""
    found, deadline = None, time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        found = checkpoint_epoch(folder)
        if found and found[1] >= epochs:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    output = process.communicate()[0]
    assert process.returncode == -signal.SIGKILL, output
    return found[0]


@contextlib.contextmanager
def training_store(root: Path, *, png: bool = False):
    """Run in `root` with its own SQLite MLflow store, no progress bars, local checkpoints under
    root/checkpoints and one torch thread (figures as HTML only unless `png`); yields root."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("NSCNET_FIGURE_PNG", "true" if png else "false")
        mp.setenv("NSCNET_PROGRESS", "0")
        mp.setenv("NSCNET_RUNS_DIR", str(root / "checkpoints"))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield root
        finally:
            torch.set_num_threads(threads)
