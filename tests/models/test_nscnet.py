"""NSCNet end to end on tiny separable data: quality, per-epoch metrics, artifacts, predict,
resume refusals, and bad input (a real SIGKILL and resume: tests/test_faults.py). Small
backbone, 32 x 64 images, one thread."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from nscnet.config import ConfigError, DataError, NscnetConfig, PredictConfig, VaenetConfig
from nscnet.images.dataset import TorchImages
from nscnet.models import training
from nscnet.models.arcface import make_head
from nscnet.models.nscnet import build_model, run_nscnet, train_epoch
from nscnet.models.predict import run_predict
from nscnet.models.saved import load_model
from nscnet.models.specaugment import SpecAugment
from nscnet.runs import tracking as T
from tests.fixtures_deep import make_dataset
from tests.fixtures_resume import training_store

TINY = dict(k=4, epochs=5, epoch_length=2, backbone="small_cnn", embedding_dim=64, pca_dim=16, num_workers=0,
            lr=1e-3, batch_size=16, freq_mask=4, device="cpu", seed=3, threads=1)
CLI_TINY = [f"--{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in TINY.items()]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite MLflow store for the module; the tests run in its folder."""
    with training_store(tmp_path_factory.mktemp("nscnet")) as root:
        yield root


@pytest.fixture(scope="module")
def data(store):
    return make_dataset(store / "data", classes=4, per_class=16, seed=1)


@pytest.fixture(scope="module")
def trained(store, data):
    """One uninterrupted training run."""
    return run_nscnet(NscnetConfig(data=str(data), truth=True, **TINY))


def _assignments(run_id: str) -> pd.DataFrame:
    return pd.read_csv(T.download_artifact(run_id, "assignments.csv"))


def test_separable_types_reach_nmi_truth_and_nmi_prev_is_logged_every_epoch(trained):
    assert trained["nmi_truth"] >= 0.8
    run_id = trained["run_id"]
    assert [step for step, _ in T.metric_history(run_id, "nmi_prev")] == [1, 2, 3, 4, 5]
    assert [step for step, _ in T.metric_history(run_id, "train_loss")] == [0, 1, 2, 3, 4]
    for name in ("silhouette", "inertia", "epoch_seconds", "images_per_second", "cluster_size_max_share"):
        assert len(T.metric_history(run_id, name)) >= 5, name
    losses = [v for _, v in T.metric_history(run_id, "train_loss")]
    assert all(np.isfinite(losses)) and max(losses) < np.log(4) + 0.5


def test_final_artifacts_and_model_are_logged(trained, data):
    run_id = trained["run_id"]
    names = set(T.list_artifacts(run_id)) | set(T.list_artifacts(run_id, "figures"))
    names |= set(T.list_artifacts(run_id, "model"))
    for expected in ("assignments.csv", "embeddings.npy", "audacity", "raven", "cluster_sizes.json",
                     "figures/epochs.html", "figures/lda_2d.html", "figures/cluster_sizes.html",
                     "model/model.json", "model/weights.pt", "model/arrays.npz", "checkpoint"):
        assert expected in names, expected
    assert not {"model_state", "predict"} & names  # the old formats are gone
    embeddings = np.load(T.download_artifact(run_id, "embeddings.npy"))
    assert embeddings.shape == (64, 64)
    assert len(_assignments(run_id)) == 64
    description, state, arrays = T.load_torch_model(run_id)
    assert description["network"] == {"kind": "embedder", "backbone": "small_cnn", "embedding_dim": 64,
                                      "pooling": "max", "input_mode": "repeat", "edge_mask": 0}  # no pretraining
    assert description["assign"]["rule"] == "nearest_centroid" and arrays["centroids"].shape == (4, 16)
    assert all(isinstance(v, torch.Tensor) for v in state.values()) and "features.0.weight" in state


def test_predict_on_the_training_data_reproduces_its_assignments(trained, data, store):
    result = run_predict(PredictConfig(run_id=trained["run_id"], data=str(data), out=str(store / "pred"), device="cpu"))
    predicted = pd.read_csv(store / "pred" / "assignments.csv")
    reference = _assignments(trained["run_id"])
    assert predicted["segment_id"].tolist() == reference["segment_id"].tolist()
    assert (predicted["cluster"] == reference["cluster"]).mean() >= 0.98
    assert (store / "pred" / "audacity").is_dir() and result["n_segments"] == 64


def test_predict_rejects_other_image_sizes_and_other_runs(trained, store):
    wide = make_dataset(store / "wide", classes=2, per_class=4, width=128)
    with pytest.raises(DataError, match="32 x 128.*32 x 64"):
        run_predict(PredictConfig(run_id=trained["run_id"], data=str(wide), out=str(store / "p2"), device="cpu"))
    with pytest.raises(DataError, match="no MLflow run"):
        run_predict(PredictConfig(run_id="feedfacefeedface", data=str(wide), out=str(store / "p3")))


def test_bad_input_is_rejected_with_clear_messages(store, data):
    with pytest.raises(ConfigError, match="k=65 is larger than the number of segments"):
        run_nscnet(NscnetConfig(data=str(data), **{**TINY, "k": 65}))
    with pytest.raises(DataError, match="no MLflow run"):
        run_nscnet(NscnetConfig(data=str(data), resume="0123456789abcdef0123456789abcdef", **TINY))
    with T.start_run(VaenetConfig(), "vaenet") as other:
        pass
    with pytest.raises(DataError, match="made by 'vaenet'"):
        run_nscnet(NscnetConfig(data=str(data), resume=other.info.run_id, **TINY))


def test_nan_loss_stops_the_run_with_a_clear_message(store, data):
    # An absurd learning rate overflows the weights within the first epoch: the loss turns NaN.
    with pytest.raises(training.NonFiniteLoss, match=r"training loss became (nan|inf) in epoch 0"):
        run_nscnet(NscnetConfig(data=str(data), **{**TINY, "lr": 1e30, "epochs": 2}))
    run = T.search_runs("nscnet").sort_values("start_time").iloc[-1]
    assert run["status"] == "FAILED"


def test_nan_loss_after_a_good_epoch_keeps_its_checkpoint(store, data):
    cfg = NscnetConfig(data=str(data), **TINY)
    model = build_model(cfg)
    loader = training.make_loader(TorchImages(data), batch_size=16, num_workers=0, device=torch.device("cpu"),
                                  drop_last=True)
    labels = np.arange(64) % 4
    cpu = training.Precision(torch.device("cpu"), False)
    augment = SpecAugment(freq_mask=4)

    def epoch(number, checkpointer):
        head = make_head("softmax", cfg.embedding_dim, 4)
        optimizers = [torch.optim.Adam(model.parameters(), lr=1e-3), torch.optim.Adam(head.parameters(), lr=1e-3)]
        return train_epoch(model, head, optimizers, loader, labels, augment, torch.Generator().manual_seed(0),
                           torch.device("cpu"), cpu, epoch=number, checkpointer=checkpointer)

    with T.start_run(cfg, "nscnet") as run:
        checkpointer = training.Checkpointer(run.info.run_id)
        loss, seen = epoch(0, checkpointer)
        assert np.isfinite(loss) and seen == 64
        checkpointer.save({"epoch": 1, "model": model.state_dict()})
        with torch.no_grad():
            model.embed[1].weight.fill_(float("nan"))           # the weights go bad in epoch 1
        with pytest.raises(training.NonFiniteLoss, match=r"epoch 1 \(from 0\), batch 0.*1 epochs done"):
            epoch(1, checkpointer)
    kept = training.resume_state(run.info.run_id)
    assert kept["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())


@pytest.mark.slow
def test_efficientnet_b0_one_channel_stem_trains_and_logs_a_loadable_model(store, data):
    cfg = NscnetConfig(data=str(data), **{**TINY, "backbone": "efficientnet_b0", "embedding_dim": 32,
                                          "input_mode": "adapt", "epochs": 1, "epoch_length": 1})
    result = run_nscnet(cfg)
    assert result["epochs_trained"] == 1 and np.isfinite(T.metric_history(result["run_id"], "train_loss")[0][1])
    model = load_model(result["run_id"]).network()
    images = torch.from_numpy(np.load(data / "spectrograms.npy")[:2].astype(np.float32))[:, None]
    embeddings = np.load(T.download_artifact(result["run_id"], "embeddings.npy"))[:2]
    with torch.no_grad():
        np.testing.assert_allclose(model(images).numpy(), embeddings, rtol=1e-3, atol=1e-3)
