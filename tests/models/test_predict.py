"""`nscnet predict` for VAENet and BASENet runs (k-means, and UMAP + HDBSCAN): the training data
reproduces the run's own assignments, exports and the new run's tags; models load without
pickle (`weights_only=True`), and bad inputs (other image size, old model formats, pickled
weights, study trials, unknown runs) give clear errors. NSCNet's predict is in test_nscnet.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from nscnet.cli import main
from nscnet.config import BasenetConfig, ConfigError, DataError, PredictConfig, VaenetConfig
from nscnet.images.dataset import IMAGES, SEGMENTS, open_image_writer, read_dataset
from nscnet.models.basenet import compute_features, run_basenet
from nscnet.models.predict import run_predict
from nscnet.runs import tracking as T
from tests.fixtures_cluster import make_blob_dataset
from tests.fixtures_vae import write_dataset

VAE = dict(filters=(4, 8, 8, 16, 16), dense_units=32, latent_dim=4, epochs=2, batch_size=8, k=3, pca_dim=4,
           whiten=False, n_reconstructions=0, device="cpu", threads=1, num_workers=0, seed=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite MLflow store for the module, the tests run in its folder, figures HTML only."""
    root = tmp_path_factory.mktemp("predict")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("NSCNET_FIGURE_PNG", "false")
        yield root
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def blobs(store):
    return make_blob_dataset(store / "blobs", classes=4, per_class=12, skipped=2)


@pytest.fixture(scope="module")
def basenet_run(store, blobs):
    return run_basenet(BasenetConfig(data=str(blobs), k=4, pca_dim=8))


@pytest.fixture(scope="module")
def vaenet_run(store):
    data = write_dataset(store / "contours", n=24, height=32, width=64)
    return data, run_vaenet_small(data)


def run_vaenet_small(data, **extra):
    from nscnet.models.vaenet import run_vaenet

    return run_vaenet(VaenetConfig(data=str(data), **{**VAE, **extra}))


def _assignments(run_id: str) -> pd.DataFrame:
    return pd.read_csv(T.download_artifact(run_id, "assignments.csv"))


def _same_assignments(run_id: str, out) -> None:
    predicted = pd.read_csv(out / "assignments.csv")
    reference = _assignments(run_id)
    assert predicted["segment_id"].tolist() == reference["segment_id"].tolist()
    assert predicted["cluster"].tolist() == reference["cluster"].tolist()


def test_basenet_predict_of_its_training_data_reproduces_its_assignments(store, blobs, basenet_run):
    run_id = basenet_run["run_id"]
    assert set(T.list_artifacts(run_id, "model")) == {"model/model.json", "model/arrays.npz"}  # no network
    assert main(["predict", "--run_id", run_id, "--data", str(blobs), "--out", str(store / "pb")]) == 0
    _same_assignments(run_id, store / "pb")
    assert (store / "pb" / "raven").is_dir() and (store / "pb" / "audacity").is_dir()
    new = T.search_runs("nscnet").sort_values("start_time").iloc[-1]
    run = T.get_run(new["run_id"])
    assert run.data.tags["nscnet.source_run"] == run_id and run.data.tags["nscnet.source_step"] == "basenet"
    assert run.data.metrics["n_segments"] == 48 and run.data.metrics["n_clusters"] == 4
    assert run.data.metrics["agreement_with_source"] == 1.0 and run.data.metrics["source_segments_matched"] == 48
    assert "assignments.csv" in T.list_artifacts(run.info.run_id)


def noisier_copy(source, path, *, noise: float = 0.05, seed: int = 7):
    """The ok segments of a dataset again, each image with fresh noise: new recordings of the same types."""
    dataset = read_dataset(source)
    path.mkdir()
    images = open_image_writer(path / IMAGES, len(dataset), *dataset.image_shape)
    rng = np.random.default_rng(seed)
    images[:] = np.clip(np.asarray(dataset.images, dtype=np.float32) + rng.normal(0, noise, dataset.images.shape), 0, 1)
    images.flush()
    dataset.segments.to_csv(path / SEGMENTS, index=False)
    return path


def test_basenet_predict_puts_new_segments_in_their_own_class_cluster(store, blobs, basenet_run):
    fresh = noisier_copy(blobs, store / "fresh")
    result = run_predict(PredictConfig(run_id=basenet_run["run_id"], data=str(fresh), out=str(store / "pf")))
    predicted = pd.read_csv(store / "pf" / "assignments.csv")
    classes = read_dataset(fresh).segments["label"].to_numpy()
    per_class = predicted.groupby(classes)["cluster"]
    assert (per_class.nunique() == 1).all() and per_class.first().nunique() == 4
    assert result["n_segments"] == 48


def test_vaenet_predict_of_its_training_data_reproduces_its_assignments(store, vaenet_run):
    data, trained = vaenet_run
    assert "model/weights.pt" in T.list_artifacts(trained["run_id"], "model")
    result = run_predict(PredictConfig(run_id=trained["run_id"], data=str(data), out=str(store / "pv"), device="cpu"))
    _same_assignments(trained["run_id"], store / "pv")
    assert result["n_segments"] == 24 and (store / "pv" / "embeddings.npy").exists()
    assert T.get_run(result["run_id"]).data.tags["nscnet.source_step"] == "vaenet"


def test_other_image_sizes_are_refused_naming_both_sizes(store, basenet_run, vaenet_run):
    wide = make_blob_dataset(store / "wide", classes=2, per_class=4, width=20)
    with pytest.raises(DataError, match="8 x 20.*8 x 16"):
        run_predict(PredictConfig(run_id=basenet_run["run_id"], data=str(wide), out=str(store / "p1")))
    with pytest.raises(DataError, match="8 x 20.*32 x 64.*n_mels=32 and frames=64"):
        run_predict(PredictConfig(run_id=vaenet_run[1]["run_id"], data=str(wide), out=str(store / "p2")))


def test_umap_hdbscan_runs_predict_by_their_nearest_labelled_neighbours(store, blobs):
    trained = run_basenet(BasenetConfig(data=str(blobs), reducer="umap", algorithm="hdbscan", pca_dim=8, umap_dim=2,
                                        umap_neighbors=10, min_cluster_size=5, min_samples=3))
    description = T.load_torch_model(trained["run_id"])[0]
    assert [s.get("class", s["kind"]) for s in description["chain"]] == ["PCA", "umap", "Normalizer"]
    assert description["assign"] == {"rule": "nearest_neighbours", "neighbours": 5, "algorithm": "hdbscan"}
    result = run_predict(PredictConfig(run_id=trained["run_id"], data=str(blobs), out=str(store / "pu")))
    assert result["agreement_with_source"] >= 0.95 and result["source_segments_matched"] == 48
    # new recordings of the same types: UMAP's own transform, then the vote of the training neighbours
    fresh = noisier_copy(blobs, store / "fresh-umap", seed=11)
    run_predict(PredictConfig(run_id=trained["run_id"], data=str(fresh), out=str(store / "pu2")))
    predicted = pd.read_csv(store / "pu2" / "assignments.csv")
    own = _assignments(trained["run_id"])
    assert (predicted["cluster"].to_numpy() == own["cluster"].to_numpy()).mean() >= 0.9


def test_models_load_without_pickle_and_old_formats_are_refused(store, blobs, basenet_run, vaenet_run):
    import json

    data, trained = vaenet_run
    folder = store / "pickled"
    folder.mkdir()
    description = T.load_torch_model(trained["run_id"])[0]
    (folder / "model.json").write_text(json.dumps(description))
    torch.save(torch.nn.Linear(2, 2), folder / "weights.pt")  # a whole pickled module, not a state dict
    with T.start_run(VaenetConfig(), "vaenet") as forged:
        T.log_artifacts(folder, "model")
    # predict reads weights with torch.load(weights_only=True): the pickled module is refused, not run
    with pytest.raises(DataError, match="weights.pt is not a plain state dict.*weights_only=True"):
        run_predict(PredictConfig(run_id=forged.info.run_id, data=str(data), out=str(store / "p0"), device="cpu"))
    old = store / "old"
    (old / "model_state").mkdir(parents=True)
    torch.save({"embedder": {}}, old / "model_state" / "state_dict.pt")
    with T.start_run(BasenetConfig(), "nscnet") as before:
        T.log_artifacts(old)
    with pytest.raises(DataError, match="old format \\(model_state.*train the run again"):
        run_predict(PredictConfig(run_id=before.info.run_id, data=str(blobs), out=str(store / "p7")))


def test_runs_without_a_model_are_refused(store, blobs):
    cfg = BasenetConfig(data=str(blobs), k=4, pca_dim=8)  # a study trial: features from a cache
    cached = run_basenet(cfg, features=compute_features(cfg, read_dataset(blobs)))
    with pytest.raises(DataError, match="no saved model.*study trial"):
        run_predict(PredictConfig(run_id=cached["run_id"], data=str(blobs), out=str(store / "p4")))
    with T.start_run(BasenetConfig(), "cluster") as other:
        pass
    with pytest.raises(DataError, match="made by 'cluster'; predict supports basenet, nscnet, pretrain, vaenet"):
        run_predict(PredictConfig(run_id=other.info.run_id, data=str(blobs), out=str(store / "p5")))
    with pytest.raises(DataError, match="no MLflow run"):
        run_predict(PredictConfig(run_id="feedfacefeedface", data=str(blobs), out=str(store / "p6")))
    with pytest.raises(ConfigError, match="run_id=''"):
        run_predict(PredictConfig(run_id="", data=str(blobs)))


def test_saved_chains_transform_exactly_like_the_fitted_steps():
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler

    from nscnet.models.saved import apply_chain, chain_state, nearest_neighbours, restore_chain

    rng = np.random.default_rng(0)
    x, new = rng.normal(size=(60, 12)).astype(np.float32), rng.normal(size=(9, 12)).astype(np.float32)
    fitted = Pipeline([("s", StandardScaler()), ("p", PCA(5, whiten=True, random_state=0)), ("l2", Normalizer())]).fit(x)
    chain = [fitted, FunctionTransformer().fit(fitted.transform(x))]
    described, arrays = chain_state(chain)
    assert [d["class"] for d in described] == ["StandardScaler", "PCA", "Normalizer", "FunctionTransformer"]
    np.testing.assert_array_equal(apply_chain(restore_chain(described, arrays), new), fitted.transform(new))
    with pytest.raises(TypeError, match="cannot be saved without pickle"):
        chain_state([object()])
    # the vote: majority of the nearest labelled points, noise (-1) a label like any other
    points = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [9.0]])
    labels = np.array([0, 0, 1, 2, 2, -1])
    assert nearest_neighbours(np.array([[0.05], [5.05], [9.1]]), points, labels, 3).tolist() == [0, 2, 2]
    assert nearest_neighbours(np.array([[9.1]]), points, labels, 1).tolist() == [-1]
