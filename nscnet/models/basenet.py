"""BASENet, the paper's baseline: flattened spectrograms -> PCA (or UMAP) -> clustering.

With `features=birdnet` (an optional extra, `nscnet.features.birdnet`; model weights CC BY-NC-SA
4.0, non-commercial) the BirdNET v2.4 embeddings of each segment's audio take the place of the
flattened spectrograms; the rest is the same. Such a run is tagged with the model and its
licence (`nscnet.features`, `nscnet.features.licence`) and saves no model: `predict` starts from
images, and these features start from the recordings.

`compute_features(cfg, dataset)` does the expensive, K-independent part once (flatten, then
standardize + PCA(pca_dim) without whitening or L2, or UMAP(umap_dim) as in AVGN, Sainburg et
al. 2020); studies cache its output across trials, keyed on `FEATURE_FIELDS` only, and pass
it to `run_basenet(cfg, features=...)`. `run_basenet` opens the MLflow run and hands the
features to the shared `nscnet.clustering.evaluate.evaluate_and_log`, which applies whitening / L2 and
clusters.

PCA(d) of features that already are a PCA(d) projection is a rotation, so whitening after it
is exactly the whitening of the single pipeline of docs/clustering.md (standardize, PCA, whiten, L2).

A run that computed its own features logs its model (`model/`, `nscnet.models.saved`): the
fitted chain from flattened pixels to the clustered space (PCA or PCA + UMAP, then the
post-processing) and the final clustering, for `nscnet predict`; a run given cached features
(a study trial) logs none and cannot predict.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from nscnet import defaults
from nscnet.clustering.evaluate import evaluate_and_log
from nscnet.config import BasenetConfig, DataError, replace
from nscnet.features import birdnet
from nscnet.features.postprocess import pca_fit_rows, postprocess_images
from nscnet.images.dataset import Dataset, read_dataset
from nscnet.runs import console, tracking

log = logging.getLogger(__name__)

# The config fields `compute_features` reads; whitening, L2 and every clustering field are applied
# afterwards (`evaluation_params`), so studies key their feature cache on these fields only.
FEATURE_FIELDS = ("data", "features", "normalize", "pca_dim", "reducer", "umap_dim", "umap_neighbors", "umap_min_dist", "seed")


def compute_features(cfg: BasenetConfig, dataset: Dataset) -> np.ndarray:
    """Features (N, d) float32 of the dataset's images for BASENet.

    reducer=pca: flattened images, standardized when cfg.normalize, PCA to cfg.pca_dim
    (clamped; 0 keeps the raw pixels). reducer=umap: flattened images, PCA to cfg.pca_dim first
    when it is > 0 (speed), then UMAP to cfg.umap_dim dimensions.
    """
    return fit_features(cfg, dataset)[0]


def fit_features(cfg: BasenetConfig, dataset: Dataset) -> tuple[np.ndarray, list[Any]]:
    """(`compute_features` output (N, d), the fitted steps from flattened images (N, H*W) to it)."""
    from nscnet.features.reduction import umap_fit

    source = dataset.images
    if cfg.features == "birdnet":
        source = birdnet.embed_dataset(dataset)[:, None, :]  # (N, 1, 1024): one row per segment
    # read from the memmap chunk by chunk; fitted on a sample of rows beyond 1 GiB (docs/scale.md)
    reduced, notes = postprocess_images(source, replace(cfg, whiten=False, l2=False))
    if cfg.reducer == "pca":
        return reduced, [notes["pipeline"]]
    features, reducer = umap_fit(reduced, cfg)
    return features, [notes["pipeline"], reducer]


def evaluation_params(cfg: BasenetConfig) -> BasenetConfig:
    """The post-processing still to apply to `compute_features` output (see module docstring)."""
    if cfg.reducer == "pca":
        return replace(cfg, normalize=False)
    # UMAP output: no PCA or whitening on top of it; L2 only when asked for
    return replace(cfg, normalize=False, pca_dim=0, whiten=False)


def run_basenet(cfg: BasenetConfig, *, features: np.ndarray | None = None) -> dict[str, Any]:
    """The `basenet` entry point: one MLflow run; returns its metrics (those of the selected K in a sweep).

    features: the output of `compute_features(cfg, dataset)` when the caller has it cached.
    """
    dataset = read_dataset(cfg.data)
    cfg, tags = defaults.for_data(cfg, len(dataset))
    if cfg.features == "birdnet":
        birdnet.model_path()  # the extra missing: one line, before any run opens
        tags = {**tags, "nscnet.features": birdnet.MODEL, "nscnet.features.licence": birdnet.LICENCE}
    with tracking.start_run(cfg, "basenet", tags=tags) as run:
        if cfg.truth:
            dataset.truth()  # no labels: fail before the expensive part
        width = birdnet.DIM if cfg.features == "birdnet" else int(np.prod(dataset.image_shape))
        tracking.log_params({"n_segments": len(dataset), "image_shape": "x".join(map(str, dataset.image_shape)),
                             "pca_fit_rows": pca_fit_rows(len(dataset), width)})
        chain = None  # unknown for cached features: such a run cannot predict
        if features is None:
            started = time.perf_counter()
            features, chain = fit_features(cfg, dataset)
            if cfg.features != "pixels":
                chain = None  # predict rebuilds features from images only
            seconds = time.perf_counter() - started
            tracking.log_metrics({"feature_seconds": seconds, "segments_per_second": len(dataset) / max(seconds, 1e-9)})
        elif len(features) != len(dataset):
            raise DataError(f"features have {len(features)} rows but {cfg.data} holds {len(dataset)} segments")
        metrics = evaluate_and_log(features, dataset, evaluation_params(cfg),
                                   save_model="basenet" if chain is not None else "", feature_chain=chain or ())
        metrics["run_id"] = run.info.run_id
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items() if v is not None}
    console.say("basenet: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return metrics
