"""Size-aware defaults (nscnet.defaults): resolved against the data, logged, never failing a default run."""

from __future__ import annotations

import numpy as np
import pytest

from nscnet import defaults
from nscnet.config import BasenetConfig, NscnetConfig, PretrainConfig, StudyConfig
from tests.fixtures_audio import make_synthetic_dataset
from tests.fixtures_cluster import make_blob_dataset
from tests.fixtures_deep import make_dataset, one_torch_thread  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def song30(tmp_path_factory):
    """30 synthetic songs of 5 types: the small collection that used to come out all noise."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("song30"), synth=dict(types=5, songs=30, recordings=2),
                                  images=dict(duration_s=2.5, n_mels=32, frames=64))


def test_rules_scale_with_n():
    assert [defaults.auto_k(n) for n in (30, 200, 2000, 7652, 100000)] == [4, 10, 32, 62, 64]
    assert defaults.auto_k(7652, usual=16) == 16 and defaults.auto_k(3) == 2
    assert [defaults.auto_min_cluster_size(n) for n in (30, 200, 2000, 7652)] == [3, 7, 22, 44]
    assert [defaults.auto_min_samples(m) for m in (3, 22)] == [3, 22]
    assert [defaults.auto_umap_neighbors(n) for n in (5, 30, 200, 2000)] == [2, 5, 14, 15]
    assert [defaults.auto_pca_dim(n) for n in (3, 30, 200, 1000, 7652)] == [2, 5, 14, 62, 128]  # the paper's 128
    assert defaults.auto_pca_dim(7652, usual=64) == 64 and defaults.auto_pca_dim(6, whiten=True) == 1  # N/4 whitened
    # 12 N images, 2,400..6,144: 3 epochs of 2,048 (the preset at 7,652 as before), 6 at 1,000, at most 50
    assert [defaults.auto_pretrain_epochs(n, 2048) for n in (30, 50, 200, 500, 1000, 7652)] == [50, 48, 12, 12, 6, 3]
    assert defaults.auto_pretrain_epochs(7652, 0) == 1  # `pretrain`'s epochs of all 7,652 images


def test_resolve_fills_auto_fields_keeps_given_ones_and_caps_batches():
    cfg, notes = defaults.resolve(BasenetConfig(algorithm="hdbscan", reducer="umap"), 30)
    assert (cfg.k, cfg.min_cluster_size, cfg.min_samples, cfg.umap_neighbors) == (0, 3, 3, 5)  # k: HDBSCAN's own
    assert set(notes) == {"k", "min_cluster_size", "min_samples", "umap_neighbors", "pca_dim"}
    assert "N=30" in notes["min_cluster_size"] and "finds the number of clusters itself" in notes["k"]
    given, notes = defaults.resolve(BasenetConfig(k=8, min_cluster_size=7, min_samples=3, umap_neighbors=9,
                                                  pca_dim=6), 30)
    assert (given.k, given.min_cluster_size, given.min_samples, given.umap_neighbors, given.pca_dim) == (8, 7, 3, 9, 6)
    assert not notes
    capped, notes = defaults.resolve(BasenetConfig(pca_dim=128), 30)  # whitened: at most N/4 components
    assert capped.pca_dim == 7 and notes["pca_dim"] == "7 (capped at N/4, whitened; asked 128)"
    assert defaults.resolve(BasenetConfig(pca_dim=128, whiten=False), 30)[0].pca_dim == 29  # N - 1
    nsc, notes = defaults.resolve(NscnetConfig(pretrain_epochs=2), 30)
    assert (nsc.batch_size, nsc.pretrain_epoch_size, nsc.k) == (30, 30, 4)
    assert "capped at N" in notes["batch_size"] and "pretrain_epoch_size" in notes
    assert defaults.resolve(PretrainConfig(), 100000)[0].k == 16  # pretrain's evaluation keeps its usual 16


def test_study_k_grid_is_cut_to_the_data():
    assert defaults.k_grid_bounds(64, 2048, 7652) == (64, 2048, None)
    low, high, notice = defaults.k_grid_bounds(64, 2048, 1303)
    assert (low, high) == (64, 1302) and "1303 segments" in notice and "\n" not in notice
    assert defaults.k_grid_bounds(64, 2048, 30)[:2] == (2, 29)
    assert defaults.k_grid_bounds(2, 16, 30) == (2, 16, None)  # what ran before still runs
    StudyConfig(k_min=64, k_max=2048)  # the defaults stay valid configs


def test_default_basenet_on_30_songs_is_not_all_noise_and_logs_what_it_resolved(tracking, song30):
    from nscnet.runs import tracking as T
    from nscnet.models.basenet import run_basenet

    km = run_basenet(BasenetConfig(data=str(song30), truth=True, figures=False, export=False))
    run = T.get_run(km["run_id"])
    assert run.data.params["k"] == "4" and "k=4 (auto" in run.data.tags[defaults.AUTO_TAG]
    assert run.data.params["pca_dim"] == run.data.params["pca_dim_used"] == "5"  # sqrt(N) components, as logged
    assert "pca_dim=5 (auto: max(sqrt(N), N/16), 2..128; N=30)" in run.data.tags[defaults.AUTO_TAG]
    assert run.info.run_name == "basenet pca5 kmeans k=4" and km["nmi_truth"] > 0.5
    for reducer in ("pca", "umap"):
        hdb = run_basenet(BasenetConfig(data=str(song30), truth=True, algorithm="hdbscan", reducer=reducer,
                                        figures=False, export=False))
        assert hdb["n_clusters"] >= 2 and hdb["noise_fraction"] < 1, reducer
        run = T.get_run(hdb["run_id"])
        assert (run.data.params["min_cluster_size"], run.data.params["min_samples"]) == ("3", "3")
        assert "min_cluster_size=3 (auto" in run.data.tags[defaults.AUTO_TAG]
    assert run.data.params["umap_neighbors"] == "5" and run.info.run_name == "basenet umap10 hdbscan mcs=3"


def test_defaults_on_2000_segments_scale_up(tracking, tmp_path):
    from nscnet.runs import tracking as T
    from nscnet.models.basenet import run_basenet

    data = make_blob_dataset(tmp_path / "blobs2000", classes=8, per_class=250, height=8, width=8)
    metrics = run_basenet(BasenetConfig(data=str(data), algorithm="hdbscan", pca_dim=8, whiten=False,
                                        truth=True, figures=False, export=False, stability_runs=0))
    params = T.get_run(metrics["run_id"]).data.params
    assert (params["k"], params["min_cluster_size"], params["min_samples"]) == ("0", "22", "22")  # k: HDBSCAN's own
    assert metrics["n_clusters"] == 8 and metrics["nmi_truth"] > 0.95


def test_all_noise_is_flagged_loudly_with_a_suggestion(tracking, tmp_path):
    from nscnet.runs import tracking as T
    from nscnet.clustering.evaluate import NOISE_TAG
    from nscnet.models.basenet import run_basenet

    rng = np.random.default_rng(0)
    data = make_blob_dataset(tmp_path / "uniform", classes=1, per_class=40, noise=0.4, seed=int(rng.integers(100)))
    metrics = run_basenet(BasenetConfig(data=str(data), algorithm="hdbscan", min_cluster_size=30, min_samples=10,
                                        pca_dim=4, figures=False, export=False, stability_runs=0))
    run = T.get_run(metrics["run_id"])
    if metrics["n_clusters"] == 0:
        assert "ALL SEGMENTS ARE NOISE" in run.data.tags[NOISE_TAG]
    else:
        assert metrics["noise_fraction"] > 0.5 and "are noise" in run.data.tags[NOISE_TAG]
    assert "try smaller values" in run.data.tags[NOISE_TAG]
    assert "**Warning:**" in run.data.tags["mlflow.note.content"]
    from nscnet.clustering.cluster import noise_warning

    assert noise_warning("hdbscan", 3, 0.2, min_cluster_size=3, min_samples=3) is None


def test_hdbscan_without_k_finds_its_own_number_and_says_how(tracking, song30):
    from nscnet.runs import tracking as T
    from nscnet.models.basenet import run_basenet

    cfg, notes = defaults.resolve(BasenetConfig(algorithm="hdbscan"), 30)
    assert cfg.k == 0 and "finds the number of clusters itself" in notes["k"]
    nsc, notes = defaults.resolve(NscnetConfig(final_algorithm="hdbscan"), 30)
    assert (nsc.k, nsc.k_train) == (0, 4) and "k_train" in notes  # the pseudo-labels still have a K
    given = run_basenet(BasenetConfig(data=str(song30), truth=True, algorithm="hdbscan", reducer="umap", k=5,
                                      figures=False, export=False, stability_runs=0))
    assert given["n_clusters"] == 5  # k given: HDBSCAN's tree cut to 5 clusters
    found = run_basenet(BasenetConfig(data=str(song30), truth=True, algorithm="hdbscan", reducer="umap",
                                      figures=False, export=False, stability_runs=0))
    assert "finds the number of clusters itself" in T.get_run(found["run_id"]).data.tags[defaults.AUTO_TAG]


@pytest.mark.slow
def test_quality_preset_on_30_songs_is_not_all_noise(tracking, song30):
    from nscnet import presets
    from nscnet.models.nscnet import run_nscnet
    from nscnet.runs import tracking as T

    metrics = run_nscnet(presets.config("nscnet", "quality", data=str(song30), truth=True, figures=False,
                                        export=False, stability_runs=0, device="cpu", threads=1, num_workers=0,
                                        pretrain_epochs=1, embedding_dim=16))
    assert metrics["n_clusters"] >= 2 and metrics["noise_fraction"] < 1
    run = T.get_run(metrics["run_id"])
    assert "min_cluster_size=3 (auto" in run.data.tags[defaults.AUTO_TAG]
    assert "batch_size=30 (capped at N" in run.data.tags[defaults.AUTO_TAG]
    assert "final_algorithm=hdbscan (auto: no k given" in run.data.tags[defaults.AUTO_TAG]
    assert "ensemble=3 (auto: 3 networks while pretraining passes 12 times" in run.data.tags[defaults.AUTO_TAG]
    assert run.data.params["ensemble"] == "3" and "pretrain2_train_loss" in run.data.metrics
    assert run.data.params["final_algorithm"] == "hdbscan"
    # songs cut from their onset (pad end): their start must not be silenced
    assert "embed_edge_mask=0 (auto: cuts not centred (pad end))" in run.data.tags[defaults.AUTO_TAG]
    # k given: k-means at k in the UMAP space of the embeddings (above HDBSCAN's tree cut, docs/RESULTS.md)
    given = run_nscnet(presets.config("nscnet", "quality", data=str(song30), truth=True, figures=False, k=5,
                                      export=False, stability_runs=0, device="cpu", threads=1, num_workers=0,
                                      pretrain_epochs=1, embedding_dim=16))
    run = T.get_run(given["run_id"])
    assert given["n_clusters"] == 5 and run.data.params["final_algorithm"] == "kmeans"
    assert "final_algorithm=kmeans (auto: k-means at the k given)" in run.data.tags[defaults.AUTO_TAG]


def test_final_algorithm_auto_follows_whether_k_is_given():
    cfg, notes = defaults.resolve(NscnetConfig(final_algorithm="auto", k=7), 200)
    assert (cfg.final_algorithm, cfg.k, cfg.k_train) == ("kmeans", 7, 0) and "k-means at the k given" in notes["final_algorithm"]
    cfg, notes = defaults.resolve(NscnetConfig(final_algorithm="auto"), 200)
    assert (cfg.final_algorithm, cfg.k, cfg.k_train) == ("hdbscan", 0, 10)  # the pseudo-labels' K: sqrt(N/2)
    assert "HDBSCAN finds the number of clusters" in notes["final_algorithm"]
    fixed, notes = defaults.resolve(NscnetConfig(final_algorithm="hdbscan", k=7), 200)
    assert fixed.final_algorithm == "hdbscan" and "final_algorithm" not in notes  # a given algorithm stays


def test_pretraining_length_and_pca_dim_resolve_on_30_images(tracking, tmp_path, one_torch_thread):
    """`pretrain` (epochs 0) and NSCNet's in-run pretraining (pretrain_epochs -1): 12 N images,
    2,400..6,144, at most 50 epochs; pca_dim -1: max(sqrt(N), N/16), at most the step's usual;
    logged as resolved; `pretrain`'s given 64 capped at N - 1."""
    from nscnet.models.nscnet import run_nscnet
    from nscnet.models.pretrain import run_pretrain
    from nscnet.runs import tracking as T

    data = str(make_dataset(tmp_path / "img30", classes=5, per_class=6, height=16, width=32))
    tiny = dict(data=data, backbone="small_cnn", embedding_dim=16, batch_size=16, num_workers=0, device="cpu",
                threads=1, truth=True, figures=False, export=False, stability_runs=0)
    pre = run_pretrain(PretrainConfig(k=5, **tiny))
    run = T.get_run(pre["run_id"])
    assert (run.data.params["epochs"], run.data.params["pca_dim"]) == ("50", "29")
    assert len(T.metric_history(pre["run_id"], "train_loss")) == 50  # the 50 epochs ran
    tag = run.data.tags[defaults.AUTO_TAG]
    assert "epochs=50 (auto: 12N images, 2,400..6,144, 1..50 epochs of 30; N=30)" in tag
    assert "pca_dim=29 (capped at N - 1; asked 64)" in tag
    nsc = run_nscnet(NscnetConfig(k=5, epochs=0, pretrain_epochs=-1, pca_dim=-1, **tiny))
    run = T.get_run(nsc["run_id"])
    assert (run.data.params["pretrain_epochs"], run.data.params["pca_dim"]) == ("50", "5")
    tag = run.data.tags[defaults.AUTO_TAG]
    assert "pretrain_epochs=50 (auto: 12N images" in tag and "pca_dim=5 (auto: max(sqrt(N), N/16), 2..256" in tag
    assert nsc["n_clusters"] == 5
