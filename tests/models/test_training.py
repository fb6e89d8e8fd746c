"""The shared training machinery: devices, seeding, checkpoints, resume checks, NaN, early stop."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from nscnet.config import ConfigError, DataError, NscnetConfig, VaenetConfig
from nscnet.images.dataset import TorchImages
from nscnet.models import training
from nscnet.runs import tracking as T
from tests.fixtures_deep import make_dataset


def test_cpu_device_and_precision_off_on_cpu():
    device = training.choose_device("cpu")
    precision = training.Precision(device, enabled=True)
    assert device.type == "cpu" and not precision.enabled and precision.scaler is None
    assert precision.name == "float32"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cuda"):
            training.choose_device("cuda")


def test_seed_everything_depends_on_seed_and_epoch_only():
    training.seed_everything(7, 3)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    training.seed_everything(7, 4)
    other = (random.random(), np.random.rand(), torch.rand(1).item())
    training.seed_everything(7, 3)
    again = (random.random(), np.random.rand(), torch.rand(1).item())
    assert first == again and first != other


def test_checkpoint_roundtrip_restores_model_optimizer_labels_and_rng(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    labels = np.array([0, 2, 1, 1, 0])
    state = {"epoch": 2, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "labels": training.labels_to_tensor(labels), "rng": training.rng_state()}
    expected_next = torch.rand(3)
    path = training.save_checkpoint(tmp_path / "run" / "checkpoint.pt", state)
    assert not (tmp_path / "run" / "checkpoint.pt.tmp").exists()

    loaded = training.load_checkpoint(path)
    clone = torch.nn.Linear(4, 3)
    clone.load_state_dict(loaded["model"])
    clone_opt = torch.optim.Adam(clone.parameters(), lr=0.1)
    clone_opt.load_state_dict(loaded["optimizer"])
    assert torch.equal(clone.weight, model.weight)
    assert clone_opt.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    np.testing.assert_array_equal(training.labels_from_tensor(loaded["labels"]), labels)
    training.set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), expected_next)


def test_corrupt_checkpoint_is_a_data_error(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="checkpoint"):
        training.load_checkpoint(bad)


def test_loader_reads_the_memmap_in_workers(tmp_path):
    path = make_dataset(tmp_path / "data", classes=2, per_class=6)
    loader = training.make_loader(TorchImages(path), batch_size=4, num_workers=1,
                                  device=torch.device("cpu"), seed=0)
    seen = []
    for images, index in loader:
        assert images.shape[1:] == (1, 32, 64) and images.dtype == torch.float32
        seen += index.tolist()
    assert seen == list(range(12))


def test_early_stopping_counts_epochs_without_enough_improvement():
    stopper = training.EarlyStopping(patience=2, min_delta=0.01)
    assert not stopper.update(0.5)
    assert not stopper.update(0.505)  # not enough improvement: 1 bad epoch
    assert not stopper.update(0.6)    # improvement resets
    assert not stopper.update(0.6)
    assert stopper.update(0.605)      # 2 bad epochs
    restored = training.EarlyStopping(patience=2, min_delta=0.01)
    restored.load_state_dict(stopper.state_dict())
    assert restored.should_stop and restored.best == 0.6


def test_nan_loss_names_epoch_and_kept_checkpoint(tracking, tmp_path):
    with T.start_run(NscnetConfig(), "nscnet") as run:
        ckpt = training.Checkpointer(run.info.run_id)
        ckpt.save({"epoch": 1})
        training.check_finite(torch.tensor(1.5), epoch=1, batch=0, checkpointer=ckpt)
        with pytest.raises(training.NonFiniteLoss, match=r"nan in epoch 1 \(from 0\), batch 3.*1 epochs done"):
            training.check_finite(torch.tensor(float("nan")), epoch=1, batch=3, checkpointer=ckpt)
    assert "checkpoint/checkpoint.pt" in T.list_artifacts(run.info.run_id, "checkpoint")


def test_resume_rebuilds_config_and_rejects_unknown_or_foreign_runs(tracking):
    cfg = NscnetConfig(k=5, epochs=3, data="somewhere")
    with T.start_run(cfg, "nscnet") as run:
        training.log_run_config(cfg)
        training.Checkpointer(run.info.run_id).save({"epoch": 2, "labels": training.labels_to_tensor(np.zeros(3))})
    rebuilt = training.resume_config(run.info.run_id, "nscnet", NscnetConfig, resume=run.info.run_id)
    assert rebuilt.k == 5 and rebuilt.data == "somewhere" and rebuilt.resume == run.info.run_id
    assert training.resume_state(run.info.run_id)["epoch"] == 2

    with pytest.raises(DataError, match="no MLflow run"):
        training.resume_config("0123456789abcdef", "nscnet", NscnetConfig)
    with T.start_run(VaenetConfig(), "vaenet") as other:
        pass
    with pytest.raises(DataError, match="vaenet"):
        training.resume_config(other.info.run_id, "nscnet", NscnetConfig)
