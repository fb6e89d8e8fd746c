"""Shared fixtures: an isolated MLflow store per test, the real data in ../shared/data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_cache = Path(tempfile.gettempdir()) / "nscnet-test-cache"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("NUMBA_CACHE_DIR", str(_cache / "numba"))
os.environ.setdefault("MPLCONFIGDIR", str(_cache / "mpl"))
os.environ.setdefault("OMP_NUM_THREADS", "2")
# PNG copies of figures off in tests (each is a headless Chromium after the run, seconds of CPU
# in the background of the next tests); the tests of PNG export turn them on (`png_on`), and the
# bare-machine tests run steps with the user's default (on)
os.environ.setdefault("NSCNET_FIGURE_PNG", "false")

SHARED_DATA = Path(os.environ.get("NSCNET_SHARED_DATA", ROOT.parent / "shared" / "data"))
BENGALESE = SHARED_DATA / "bengalese-finch"


def require(condition: bool, reason: str) -> None:
    """Skip when a component is absent, but only outside CI: under CI it must be there."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"required under CI: {reason}")
    print(f"SKIP: {reason}")
    pytest.skip(reason)


def png_expected() -> bool:
    """Whether steps make PNG copies of figures here: where kaleido finds a browser, and always
    under CI (.ci/run installs Chromium); on a bare machine only the HTML is logged."""
    from nscnet.runs.tracking import find_browser

    return find_browser() is not None or bool(os.environ.get("CI"))


@pytest.fixture
def png_on(monkeypatch) -> None:
    """PNG copies of figures on, as for a user (tests of PNG export)."""
    monkeypatch.setenv("NSCNET_FIGURE_PNG", "true")


@pytest.fixture
def bengalese() -> Path:
    """../shared/data/bengalese-finch, read in place (read-only)."""
    require(BENGALESE.is_dir(), f"real data not found at {BENGALESE}")
    return BENGALESE


@pytest.fixture
def tracking(tmp_path, monkeypatch) -> str:
    """A fresh SQLite MLflow store in tmp_path; the test runs in tmp_path."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session", autouse=True)
def _numba_kernels_compiled_once():
    """Compile librosa's numba kernels in this process before any test starts worker or CLI
    processes: concurrent first compilations can pair on-disk cache files from different
    processes and crash (numba issue 10128; seen here as a segfault in chroma_stft)."""
    import numpy as np

    from nscnet.analysis.entropy import segment_entropy
    from nscnet.audio.features import warm_up

    warm_up()
    noise = np.random.default_rng(0).standard_normal(11025)
    for dtype in (np.float32, np.float64):
        segment_entropy(noise.astype(dtype), sr=22050)
    yield
