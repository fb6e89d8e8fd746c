"""VAENet: network shapes, the loss, training on synthetic images, the full run (its SIGKILL
and resume: tests/test_faults.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from nscnet.config import ConfigError, DataError, VaenetConfig
from nscnet.models.saved import load_model
from nscnet.models.vae_model import ConvVAE, kl_weight, vae_loss, vae_shapes
from nscnet.models.vaenet import run_vaenet
from nscnet.runs.tracking import download_artifact, get_run, list_artifacts, metric_history, wait_for_pngs
from tests.conftest import png_expected
from tests.fixtures_deep import one_torch_thread  # noqa: F401 (fixture)
from tests.fixtures_resume import training_store
from tests.fixtures_vae import write_dataset

SMALL = dict(filters=(4, 8, 8, 16, 16), dense_units=32, latent_dim=4)
TRAINABLE = dict(filters=(8, 16, 16, 32, 32), dense_units=64, latent_dim=8)  # learns the contours in a few epochs


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------ network

def test_paper_input_has_a_1x8x256_bottleneck_and_reconstructs_its_own_shape():
    model = ConvVAE((64, 512), latent_dim=16)
    x = torch.rand(2, 1, 64, 512)
    bottleneck = model.encoder[:-1](x)  # everything but the Flatten
    assert bottleneck.shape == (2, 256, 1, 8)
    logits, mu, logvar = model(x)
    assert logits.shape == x.shape and mu.shape == (2, 16) and logvar.shape == (2, 16)


@pytest.mark.parametrize("shape", [(64, 128), (32, 64), (33, 70)])
@pytest.mark.parametrize("residual", [False, True])
def test_smaller_and_odd_images_keep_their_shape(shape, residual):
    model = ConvVAE(shape, residual=residual, **SMALL).eval()
    x = torch.rand(3, 1, *shape)
    logits, mu, logvar = model(x)
    assert logits.shape == x.shape and mu.shape == (3, 4)
    assert torch.isfinite(logits).all() and torch.isfinite(logvar).all()
    recon = model.reconstruct(x)
    assert recon.min() >= 0 and recon.max() <= 1


def test_shapes_are_derived_from_the_input_size():
    assert vae_shapes(64, 512).sizes[-1] == (2, 16) and vae_shapes(64, 512).bottleneck == (1, 8)
    assert vae_shapes(64, 128).bottleneck == (1, 2)
    assert vae_shapes(32, 64).bottleneck == (1, 1)  # height is already 1: only the width is halved


def test_residual_blocks_add_layers_but_keep_the_interface():
    plain = ConvVAE((32, 64), residual=False, **SMALL)
    residual = ConvVAE((32, 64), residual=True, **SMALL)
    assert sum(p.numel() for p in residual.parameters()) > sum(p.numel() for p in plain.parameters())
    assert residual.flat_dim == plain.flat_dim


def test_filters_must_give_five_widths():
    with pytest.raises(ValueError, match="five"):
        ConvVAE((32, 64), filters=(8, 16))


def test_evaluation_mode_encodes_deterministically():
    model = ConvVAE((32, 64), **SMALL).eval()
    x = torch.rand(2, 1, 32, 64)
    assert torch.equal(model(x)[0], model(x)[0])


# --------------------------------------------------------------------------------- loss

def test_kl_is_zero_for_the_prior_and_positive_otherwise():
    target = torch.rand(2, 1, 4, 4)
    logits = torch.zeros_like(target)
    zero = torch.zeros(2, 3)
    _, _, kl = vae_loss(logits, target, zero, zero)
    assert kl.item() == pytest.approx(0.0, abs=1e-7)
    _, _, kl = vae_loss(logits, target, torch.ones(2, 3), zero)
    assert kl.item() == pytest.approx(0.5 * 3)  # 0.5 * mu^2 per dimension, summed over 3


def test_reconstruction_loss_is_summed_over_pixels_and_averaged_over_the_batch():
    target = torch.full((2, 1, 4, 8), 0.5)
    logits = torch.zeros_like(target)  # sigmoid = 0.5: BCE = log 2 per pixel, squared error 0
    zero = torch.zeros(2, 3)
    total, recon, kl = vae_loss(logits, target, zero, zero, recon="bce", beta=2.0)
    assert recon.item() == pytest.approx(32 * math.log(2), rel=1e-5)
    assert total.item() == pytest.approx(recon.item() + 2.0 * kl.item())
    _, recon, _ = vae_loss(logits, target, zero, zero, recon="mse")
    assert recon.item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="huber"):
        vae_loss(logits, target, zero, zero, recon="huber")


def test_kl_warmup_rises_linearly_to_beta():
    assert [kl_weight(e, beta=2.0, warmup_epochs=4) for e in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert kl_weight(0, beta=0.7, warmup_epochs=0) == 0.7


# ------------------------------------------------------------------------------ the run

RUN = dict(epochs=10, batch_size=8, lr=1e-2, num_workers=0, k=3, pca_dim=4, whiten=False, seed=0,
           n_reconstructions=3, device="cpu", threads=1, **TRAINABLE)
CLI_RUN = [f"--{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in RUN.items()]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite MLflow store for the module; the tests run in its folder."""
    with training_store(tmp_path_factory.mktemp("vaenet"), png=True) as root:
        yield root


@pytest.fixture(scope="module")
def data(store):
    return write_dataset(store / "data", n=64, noise=0.0)


@pytest.fixture(scope="module")
def trained(store, data):
    """One uninterrupted run with figures as PNG too."""
    threads = torch.get_num_threads()
    yield run_vaenet(VaenetConfig(data=str(data), truth=True, **RUN))
    torch.set_num_threads(threads)


def test_reconstruction_loss_falls_by_half_and_every_epoch_is_logged(trained):
    run_id = trained["run_id"]
    recon = [v for _, v in metric_history(run_id, "recon_loss")]
    assert len(recon) == 10
    assert recon[-1] <= 0.5 * recon[0], recon  # the network learns to reconstruct
    for key in ("kl_loss", "train_loss", "val_loss", "epoch_seconds", "images_per_second"):
        assert [step for step, _ in metric_history(run_id, key)] == list(range(10)), key


def test_latent_means_cluster_the_types_and_everything_is_logged(trained, data):
    run_id = trained["run_id"]
    run = get_run(run_id)
    for key in ("silhouette", "inertia", "nmi_truth", "ari_truth", "segments_per_second"):
        assert key in run.data.metrics, key
    assert run.data.metrics["nmi_truth"] > 0.5  # three well-separated contour types
    assert run.data.params["latent_dim"] == "8" and run.data.params["n_val"] == "6"
    assert wait_for_pngs()  # rendered after the run by nscnet.runs.pngjob
    artifacts = set(list_artifacts(run_id)) | set(list_artifacts(run_id, "figures"))
    for name in ("assignments.csv", "embeddings.npy", "checkpoint", "config.json",
                 *(["figures/reconstructions.png"] if png_expected() else []),
                 "figures/reconstructions.html", "figures/lda_2d.html", "figures/contingency.html"):
        assert name in artifacts, (name, artifacts)
    embeddings = np.load(download_artifact(run_id, "embeddings.npy"))
    assert embeddings.shape == (64, 8)
    assignments = pd.read_csv(download_artifact(run_id, "assignments.csv"))
    assert len(assignments) == 64 and set(assignments["cluster"]) <= {0, 1, 2}
    model = load_model(run_id).network()  # the logged model encodes to the logged embeddings
    images = torch.from_numpy(np.load(data / "spectrograms.npy").astype(np.float32)).unsqueeze(1)
    with torch.no_grad():
        np.testing.assert_allclose(model.encode(images)[0].numpy(), embeddings, rtol=1e-4, atol=1e-4)


def test_warm_up_mse_no_validation_and_early_stopping_on_the_training_loss(store, data, monkeypatch):
    monkeypatch.setenv("NSCNET_FIGURE_PNG", "false")
    # min_delta so large that no epoch counts as an improvement: stops after patience + 1 epochs
    out = run_vaenet(VaenetConfig(data=str(data), **{**RUN, "epochs": 5, "val_fraction": 0.0, "recon_loss": "mse",
                                                     "kl_warmup_epochs": 4, "beta": 2.0, "patience": 1,
                                                     "min_delta": 1e9, "export": False}))
    run_id = out["run_id"]
    assert out["epochs_trained"] == 2
    assert [v for _, v in metric_history(run_id, "kl_weight")] == [0.5, 1.0]
    assert metric_history(run_id, "val_loss") == []
    assert get_run(run_id).data.params["n_val"] == "0"
    assert "assignments.csv" not in list_artifacts(run_id)


def test_bad_input_is_rejected_with_clear_messages(store, data, tmp_path):
    with pytest.raises(ConfigError, match="val_fraction=1.0"):
        VaenetConfig(val_fraction=1.0)
    with pytest.raises(ConfigError, match="filters"):
        VaenetConfig(filters=(8, 16))
    with pytest.raises(DataError, match="not a dataset folder"):
        run_vaenet(VaenetConfig(data=str(tmp_path / "nowhere"), **RUN))
    one = write_dataset(tmp_path / "one", n=2)
    with pytest.raises(DataError, match="at least 2 training segments"):
        run_vaenet(VaenetConfig(data=str(one), **RUN))


