"""Self-supervised (SimCLR) pretraining and the runs that start from it."""

from __future__ import annotations

import pytest
import torch

from nscnet.config import ConfigError, DataError, NscnetConfig, PretrainConfig, VaenetConfig
from nscnet.models.pretrain import nt_xent
from nscnet.runs import tracking as T
from tests.fixtures_deep import TINY, one_torch_thread, tiny_images as data  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pretraining_lowers_its_loss_and_nscnet_starts_from_it(tracking, data):
    from nscnet.models.nscnet import build_model, run_nscnet
    from nscnet.models.pretrain import run_pretrain

    cfg = PretrainConfig(data=str(data), k=4, epochs=4, batch_size=16, embedding_dim=32, pca_dim=8, num_workers=0,
                         device="cpu", threads=1, seed=0, truth=True, stability_runs=2)
    metrics = run_pretrain(cfg)
    losses = [v for _, v in sorted(T.metric_history(metrics["run_id"], "train_loss"))]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert metrics["nmi_truth"] > 0.3 and metrics["silhouette"] is not None
    run_id = metrics["run_id"]
    # the pretrained run carries its network: no network option given, its description is the default
    network = ("backbone", "embedding_dim")
    deep = NscnetConfig(data=str(data), **{**{k: v for k, v in TINY.items() if k not in network}, "epochs": 1},
                        pretrained_run=run_id)
    assert (deep.backbone, deep.embedding_dim, deep.pooling) == ("", 0, "")  # "from the pretrained run"
    model = build_model(deep)
    description, state, _ = T.load_torch_model(run_id)
    assert torch.equal(model.state_dict()["features.0.weight"], state["features.0.weight"])
    assert description["network"]["backbone"] == "small_cnn" and description["step"] == "pretrain"
    carried = run_nscnet(deep)
    assert carried["nmi_truth"] > 0.3
    params = T.get_run(carried["run_id"]).data.params  # resolved before the run: logged as used
    assert (params["backbone"], params["embedding_dim"], params["pooling"], params["input_mode"]) == (
        "small_cnn", "32", "max", "repeat")
    assert T.load_torch_model(carried["run_id"])[0]["network"]["embedding_dim"] == 32
    # a value the user gives that contradicts the pretrained network is refused, as before
    with pytest.raises(DataError, match="trained backbone='small_cnn' but this run uses backbone='efficientnet_b0'"):
        build_model(NscnetConfig(**{**TINY, "backbone": "efficientnet_b0"}, pretrained_run=run_id))
    with pytest.raises(DataError, match="input_mode='repeat' but this run uses input_mode='adapt'"):
        build_model(NscnetConfig(**TINY, input_mode="adapt", pretrained_run=run_id))
    assert build_model(NscnetConfig(**{**TINY, "embedding_dim": 16}, pretrained_run=run_id)).spec["embedding_dim"] == 16
    from nscnet.models.pretrain import load_pretrained_encoder
    from nscnet.models.vaenet import build_model as build_vae

    with pytest.raises(DataError, match="vae_encoder"):  # VAENet starts only from its own encoder
        load_pretrained_encoder(build_vae(VaenetConfig(), (32, 64)), run_id, VaenetConfig())


def test_vaenet_starts_from_a_pretrained_vae_encoder(tracking, data):
    from nscnet.models.pretrain import load_pretrained_encoder, run_pretrain
    from nscnet.models.vaenet import build_model as build_vae
    from nscnet.models.vaenet import run_vaenet

    machinery = dict(num_workers=0, device="cpu", threads=1, seed=0, truth=True, stability_runs=0)
    pre = run_pretrain(PretrainConfig(data=str(data), k=4, epochs=1, batch_size=16, backbone="vae_encoder",
                                      input_mode="adapt", embedding_dim=32, pca_dim=8, **machinery))
    cfg = VaenetConfig(data=str(data), k=4, epochs=1, batch_size=16, pretrained_run=pre["run_id"], **machinery)
    model = build_vae(cfg, (32, 64))
    load_pretrained_encoder(model, pre["run_id"], cfg)
    state = T.load_torch_model(pre["run_id"])[1]
    for block in range(5):  # every stride-2 convolution and its BatchNorm statistics
        assert torch.equal(model.state_dict()[f"encoder.{block}.0.weight"], state[f"features.{block}.0.weight"])
        assert torch.equal(model.state_dict()[f"encoder.{block}.1.running_mean"],
                           state[f"features.{block}.1.running_mean"])
    assert run_vaenet(cfg)["n_clusters"] == 4
    with pytest.raises(DataError, match="default filters"):
        load_pretrained_encoder(build_vae(cfg, (32, 64)), pre["run_id"], VaenetConfig(filters=(8, 16, 16, 32, 32)))


def test_nscnet_pretrains_in_its_own_run_when_asked(tracking, data):
    from nscnet.models.nscnet import run_nscnet

    # epochs=0: the pretrained network's features are clustered once, no DeepCluster epoch
    metrics = run_nscnet(NscnetConfig(data=str(data), **{**TINY, "epochs": 0}, pretrain_epochs=4, pretrain_epoch_size=0))
    losses = [v for _, v in sorted(T.metric_history(metrics["run_id"], "pretrain_train_loss"))]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert metrics["nmi_truth"] > 0.3 and metrics["epochs_trained"] == 0
    assert "train_loss" not in T.get_run(metrics["run_id"]).data.metrics
    # a final density clustering left to find its own number (k=0) that finds only noise
    # (2 clusters of 60 cannot fit in 64 images); with k given it would be cut to k clusters
    noise = run_nscnet(NscnetConfig(data=str(data), **{**TINY, "epochs": 0, "k": 0}, final_algorithm="hdbscan",
                                    min_cluster_size=60, min_samples=60))
    assert noise["n_clusters"] == 0 and noise["noise_fraction"] == 1.0
    with pytest.raises(ConfigError, match="pretrain_epochs and pretrained_run"):
        NscnetConfig(pretrain_epochs=2, pretrained_run="abc")


def test_nt_xent_is_low_for_matching_views_and_high_for_unrelated_ones():
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    assert float(nt_xent(z, z, 0.1)) < float(nt_xent(z, torch.randn(16, 8), 0.1))


def test_edge_masks_silence_only_the_ends_of_a_view():
    from nscnet.models.pretrain import view
    from nscnet.models.specaugment import SpecAugment

    images = torch.ones(16, 1, 8, 64)
    plain = dict(shift=0, gain=0.0, noise=0.0, freq_mask=0, time_mask=0, edge_mask=0)
    augment = SpecAugment(0, 0, 1, 0, 1)
    out = view(images, PretrainConfig(**{**plain, "edge_mask": 64}), augment, torch.Generator().manual_seed(0))
    live = out[:, 0, 0, :] > 0                                   # (16, 64): 8 frames at most at each end
    assert live[:, 8:56].all() and not live.all()
    for row in live:                                             # one silent prefix, one silent suffix
        kept = torch.nonzero(row).flatten()
        assert len(kept) == int(kept[-1] - kept[0]) + 1
    assert torch.equal(view(images, PretrainConfig(**plain), augment, torch.Generator().manual_seed(0)), images)


def test_embedding_silences_the_edges_that_contrastive_training_taught_the_network_to_ignore(tracking, tmp_path,
                                                                                           data):
    """embed_edge_mask auto = the contrastive edge_mask when the cuts are centred, else 0; the saved
    network embeds with it (predict reproduces the run), and contrastive training sees whole views."""
    import json

    from nscnet import defaults
    from nscnet.config import PredictConfig
    from nscnet.images.dataset import META
    from nscnet.models.backbones import Embedder
    from nscnet.models.nscnet import run_nscnet
    from nscnet.models.predict import run_predict
    from nscnet.models.pretrain import run_pretrain
    from nscnet.models.saved import build_network
    from tests.fixtures_deep import make_dataset

    assert [defaults.auto_embed_edge_mask(96, pad) for pad in ("center", "end", "start", None)] == [96, 0, 0, 0]
    assert defaults.auto_embed_edge_mask(0, "center") == 0  # a network never trained to ignore its edges

    net = Embedder("small_cnn", embedding_dim=8, edge_mask=128).eval()  # 128 at 512 frames: 16 of 64 at each end
    images = torch.rand(4, 1, 32, 64, generator=torch.Generator().manual_seed(0))
    other = images.clone()
    other[..., :16], other[..., 48:] = torch.rand(4, 1, 32, 16), torch.rand(4, 1, 32, 16)
    with torch.no_grad():
        assert torch.allclose(net(images), net(other))               # the ends do not reach the embedding
        other[..., 16] += 0.5
        assert not torch.allclose(net(images), net(other))           # the middle does
        other[..., 16] -= 0.5
        with net.unmasked():
            assert not torch.allclose(net(images), net(other))       # contrastive training sees the whole view
    assert net.edge_mask == 128 and build_network(net.spec).edge_mask == 128 and net.spec["edge_mask"] == 128

    centred = make_dataset(tmp_path / "centred", classes=4, per_class=8, height=32, width=64)
    meta = json.loads((centred / META).read_text())
    (centred / META).write_text(json.dumps({**meta, "params": {"pad": "center"}}))  # as `preprocess --pad center`
    pre = run_pretrain(PretrainConfig(data=str(centred), k=4, epochs=1, batch_size=16, embedding_dim=16, pca_dim=8,
                                      edge_mask=128, num_workers=0, device="cpu", threads=1, seed=0,
                                      stability_runs=0, figures=False))
    run = T.get_run(pre["run_id"])
    assert run.data.params["embed_edge_mask"] == "128"
    assert ("embed_edge_mask=128 (auto: the network's contrastive edge_mask 128, cuts centred)"
            in run.data.tags["nscnet.auto"])
    assert T.load_torch_model(pre["run_id"])[0]["network"]["edge_mask"] == 128
    predicted = run_predict(PredictConfig(run_id=pre["run_id"], data=str(centred), out=str(tmp_path / "pred"),
                                          device="cpu"))
    assert predicted["agreement_with_source"] == 1.0  # predict embeds with the run's edge mask
    carried = run_nscnet(NscnetConfig(data=str(centred), **{**TINY, "epochs": 0, "backbone": "", "embedding_dim": 0},
                                      pretrained_run=pre["run_id"]))
    assert T.get_run(carried["run_id"]).data.params["embed_edge_mask"] == "128"  # the pretrained run's edge_mask
    given = run_nscnet(NscnetConfig(data=str(centred), **{**TINY, "epochs": 0}, embed_edge_mask=0, pretrain_epochs=1))
    assert T.get_run(given["run_id"]).data.params["embed_edge_mask"] == "0"  # a value given stays
    plain = run_nscnet(NscnetConfig(data=str(data), **{**TINY, "epochs": 0}, pretrain_epochs=1))
    run = T.get_run(plain["run_id"])
    assert run.data.params["embed_edge_mask"] == "0"
    assert "embed_edge_mask=0 (auto: cuts not centred (pad unknown))" in run.data.tags["nscnet.auto"]


def test_an_ensemble_embeds_with_every_network_and_predict_reproduces_it(tracking, tmp_path, data):
    """ensemble=2: two networks pretrained from their own seeds, each member's embedding L2-normalised
    side by side; member 0 is the network of a run of one; one DeepCluster epoch trains through both;
    the saved model rebuilds the ensemble (predict agrees 1.0); an ensemble without pretraining is refused."""
    import numpy as np

    from nscnet.config import PredictConfig
    from nscnet.models.backbones import EmbedderEnsemble
    from nscnet.models.nscnet import run_nscnet
    from nscnet.models.predict import run_predict

    base = {**TINY, "epochs": 0, "pretrain_epochs": 1, "export": True}
    one = run_nscnet(NscnetConfig(data=str(data), **base))
    two = run_nscnet(NscnetConfig(data=str(data), **base, ensemble=2))
    embeddings = {name: np.load(T.download_artifact(run["run_id"], "embeddings.npy")) for name, run in
                  (("one", one), ("two", two))}
    width = TINY["embedding_dim"]
    assert embeddings["two"].shape == (len(embeddings["one"]), 2 * width)
    members = embeddings["two"][:, :width], embeddings["two"][:, width:]
    assert np.allclose(np.linalg.norm(members[0], axis=1), 1, atol=1e-4)
    normalised = embeddings["one"] / np.linalg.norm(embeddings["one"], axis=1, keepdims=True)
    assert np.allclose(members[0], normalised, atol=1e-4)  # member 0 = the network of a run of one
    assert not np.allclose(members[0], members[1], atol=1e-2)  # member 1 learned from its own seed
    history = {name: [v for _, v in T.metric_history(two["run_id"], name)]
               for name in ("pretrain_train_loss", "pretrain1_train_loss")}
    assert all(len(losses) == 1 for losses in history.values()) and history["pretrain_train_loss"] != history[
        "pretrain1_train_loss"]
    assert T.get_run(two["run_id"]).data.params["ensemble"] == "2"
    assert two["nmi_truth"] > 0.3
    description = T.load_torch_model(two["run_id"])[0]["network"]
    assert description["kind"] == "ensemble" and len(description["members"]) == 2
    predicted = run_predict(PredictConfig(run_id=two["run_id"], data=str(data), out=str(tmp_path / "pred"),
                                          device="cpu"))
    assert predicted["agreement_with_source"] == 1.0
    trained = run_nscnet(NscnetConfig(data=str(data), **{**base, "epochs": 1}, ensemble=2))  # the head sees 2 x width
    assert trained["epochs_trained"] == 1 and trained["nmi_truth"] > 0.3
    with pytest.raises(ConfigError, match="ensemble=2 trains its networks contrastively in this run"):
        NscnetConfig(data=str(data), **{**TINY, "pretrain_epochs": 0}, ensemble=2)
    with pytest.raises(ConfigError, match="at least 2 networks"):
        EmbedderEnsemble([])
    from nscnet import defaults

    assert [defaults.auto_ensemble(n) for n in (30, 512, 513, 7652)] == [3, 3, 1, 1]
    resolved, notes = defaults.resolve(NscnetConfig(data=str(data), ensemble=-1), 50)  # no pretraining: one network
    assert resolved.ensemble == 1 and notes["ensemble"] == "1 (auto: no pretraining in this run)"
    assert defaults.resolve(NscnetConfig(data=str(data), ensemble=-1, pretrain_epochs=-1), 2000)[0].ensemble == 1
