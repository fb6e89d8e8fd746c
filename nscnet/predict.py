"""`nscnet predict`: assign the segments of a new dataset to the clusters of a trained run.

Every trained NSCNet, VAENet and BASENet run keeps under `predict/` what this needs (logged by
`nscnet.evaluate.log_predict_state`): `predict.json` (image size, clustering algorithm),
`postprocess.joblib` (the fitted pipeline from the model's raw features to the clustered
space) and `centroids.npy` (the final k-means centroids in that space). Each new segment is
embedded by the run's model, transformed by the same fitted pipeline and given the nearest
centroid's cluster. The exports (assignments.csv, Audacity and Raven label tracks) go to `out`
and, with the embeddings, to a new MLflow run tagged with the source run.

Raw features per model (the `embed` capability of its step in `nscnet.steps.STEPS`):
- nscnet: the trained embedder network (`model_state/`);
- vaenet: the latent means of the logged VAE (`tracking.load_torch_model`);
- basenet: the flattened pixels (its PCA / UMAP is part of the logged pipeline).

Runs clustered by OPTICS / HDBSCAN have no centroids and are refused with a DataError, as are
BASENet study trials (their features came from a cache, so the feature pipeline is unknown).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.metrics import pairwise_distances_argmin

from nscnet import tracking, training
from nscnet.config import ConfigError, DataError, PredictConfig
from nscnet.dataset import Dataset, TorchImages, read_dataset
from nscnet.evaluate import PREDICT_DIR
from nscnet.export import write_exports
from nscnet.locks import exclusive
from nscnet.steps import STEPS, predictable

log = logging.getLogger(__name__)


def nearest_centroid(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index (N,) of the nearest centroid (k, d) of each row of features (N, d), Euclidean."""
    return pairwise_distances_argmin(features, centroids).astype(np.int64)


def embed_nscnet(run_id: str, dataset: Dataset, cfg: PredictConfig) -> np.ndarray:
    """Embeddings (N, embedding_dim) of the dataset by the trained network of an NSCNet run."""
    from nscnet.models.backbones import Embedder
    from nscnet.models.nscnet import MODEL_DIR, extract_features, prepare_model

    description = json.loads(tracking.download_artifact(run_id, f"{MODEL_DIR}/model.json").read_text())
    state = training.load_checkpoint(tracking.download_artifact(run_id, f"{MODEL_DIR}/state_dict.pt"))
    model = Embedder(description["backbone"], embedding_dim=description["embedding_dim"],
                     pooling=description["pooling"], input_mode=description["input_mode"])
    model.load_state_dict(state["embedder"])
    device = training.choose_device(cfg.device)
    model = prepare_model(model, device)
    loader = training.make_loader(TorchImages(dataset.path), batch_size=64, num_workers=0, device=device)
    return extract_features(model, loader, device, training.Precision(device, True))


def embed_vaenet(run_id: str, dataset: Dataset, cfg: PredictConfig) -> np.ndarray:
    """Latent means (N, latent_dim) of the dataset by the VAE logged by a VAENet run."""
    from nscnet.models.vaenet import encode

    device = training.choose_device(cfg.device)
    model = tracking.load_torch_model(run_id).to(device)
    loader = training.make_loader(TorchImages(dataset.path), batch_size=64, num_workers=0, device=device)
    amp = tracking.get_run(run_id).data.params.get("amp", "true") == "true"  # encode as the run did
    return encode(model, loader, training.Precision(device, amp), device)


def embed_basenet(run_id: str, dataset: Dataset, cfg: PredictConfig) -> np.ndarray:
    """Flattened images (N, H*W): BASENet's PCA / UMAP is the first part of its logged pipeline."""
    return dataset.flat()


def predict_state(run_id: str, step: str) -> dict[str, Any]:
    """The run's `predict/predict.json`; DataError when the run cannot predict (no k-means)."""
    try:
        state = json.loads(tracking.download_artifact(run_id, f"{PREDICT_DIR}/predict.json").read_text())
    except DataError:
        hint = (" (a BASENet study trial clusters cached features: rerun `nscnet basenet` with its parameters)"
                if step == "basenet" else " (made before predict support: train it again)")
        raise DataError(f"run {run_id} has no {PREDICT_DIR}/predict.json and cannot predict{hint}") from None
    if state.get("algorithm", "kmeans") != "kmeans":
        raise DataError(f"run {run_id} clustered with algorithm={state['algorithm']}, which has no centroids: "
                        "predict needs a k-means run (algorithm=kmeans)")
    return state


def check_image_shape(expected: tuple[int, int], dataset: Dataset, run_id: str, data: str) -> None:
    """DataError naming both sizes when the dataset's images (H, W) differ from the run's."""
    if tuple(expected) != tuple(dataset.image_shape):
        raise DataError(f"{data} holds images of {dataset.image_shape[0]} x {dataset.image_shape[1]} but run "
                        f"{run_id} was trained on {expected[0]} x {expected[1]}: preprocess the new recordings "
                        f"with n_mels={expected[0]} and frames={expected[1]}")


def assign(run_id: str, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,), processed (N, d)) of features under the fitted pipeline and centroids of a run."""
    pipeline = joblib.load(tracking.download_artifact(run_id, f"{PREDICT_DIR}/postprocess.joblib"))
    centroids = np.load(tracking.download_artifact(run_id, f"{PREDICT_DIR}/centroids.npy"))
    processed = np.nan_to_num(np.asarray(pipeline.transform(features), dtype=np.float32))
    return nearest_centroid(processed, centroids), processed


def run_predict(cfg: PredictConfig) -> dict[str, Any]:
    """The `predict` entry point: exports in `cfg.out` and a new MLflow run; returns counts."""
    if not cfg.run_id:
        raise ConfigError("run_id='' : name the MLflow run id of a trained run (--run_id ...)")
    source = tracking.get_run(cfg.run_id)
    step = source.data.tags.get("nscnet.step", "")
    embed = STEPS[step].load_embed() if step in STEPS else None
    if embed is None:
        raise DataError(f"run {cfg.run_id} was made by {step or 'another program'!r}; predict supports "
                        f"{', '.join(sorted(predictable()))} runs")
    state = predict_state(cfg.run_id, step)
    dataset = read_dataset(cfg.data)
    check_image_shape(tuple(state["image_shape"]), dataset, cfg.run_id, cfg.data)
    with tracking.start_run(cfg, "predict", tags={"nscnet.source_run": cfg.run_id, "nscnet.source_step": step}) as run:
        features = embed(cfg.run_id, dataset, cfg)
        labels, _ = assign(cfg.run_id, features)
        with exclusive(cfg.out, what="export folder"):  # a second predict into it waits for this one
            out = write_exports(Path(cfg.out), dataset.segments, labels, all_segments=dataset.all_segments)
            tracking.log_artifact(out / "assignments.csv")
            tracking.log_artifacts(out / "audacity", "audacity")
            tracking.log_artifacts(out / "raven", "raven")
            np.save(out / "embeddings.npy", features)
            tracking.log_artifact(out / "embeddings.npy")
        counts = np.bincount(labels)
        metrics = {"n_segments": len(labels), "n_clusters": int((counts > 0).sum())}
        tracking.log_metrics(metrics)
    print(f"predict: {len(labels)} segments of {cfg.data} -> {metrics['n_clusters']} clusters of run "
          f"{cfg.run_id}; exports in {out}; run {run.info.run_id}")
    return {**metrics, "run_id": run.info.run_id, "out": str(out)}

