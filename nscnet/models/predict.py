"""`nscnet predict`: assign the segments of a new dataset to the clusters of a trained run.

Every trained BASENet, VAENet, NSCNet and pretrain run logs its model in one format
(`model/`, `nscnet.models.saved`): the network (none for BASENet), the fitted chain from its
raw features to the clustered space (post-processing, PCA, UMAP) and the rule that assigns
a point of that space. `load_model` rebuilds it without pickle (`torch.load(...,
weights_only=True)`), and each new segment goes the same way:

1. raw features by the model's `features` kind: the trained embedding network (nscnet,
   pretrain), the VAE's latent means (vaenet), the flattened pixels (basenet);
2. the fitted chain (UMAP by umap-learn's own `transform`, see `nscnet.features.reduction`);
3. the cluster: the nearest final centroid for k-means runs; for density clusterings
   (HDBSCAN, OPTICS, e.g. `--preset quality`) the majority label of the 5 nearest clustered
   training segments, noise included (the rule measured in docs/nscnet.md).

The exports (assignments.csv, Audacity and Raven label tracks, embeddings.npy) go to `out` and
to a new MLflow run tagged with the source run. When the dataset holds segments the source
run clustered (its training data), the run logs `agreement_with_source`: the share of those
segments that predict puts in the cluster the run gave them.

Refused with a DataError: BASENet study trials (their features came from a cache, so the run
saved no model), runs saved in an older format (pickled models), other image sizes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nscnet.config import ConfigError, DataError, PredictConfig
from nscnet.images.dataset import Dataset, TorchImages, read_dataset
from nscnet.models import training
from nscnet.models.saved import SavedModel, load_model
from nscnet.report.export import write_exports
from nscnet.runs import tracking
from nscnet.runs.locks import exclusive
from nscnet.steps import predictable

log = logging.getLogger(__name__)



def raw_features(model: SavedModel, dataset: Dataset, cfg: PredictConfig) -> np.ndarray:
    """Raw features (N, D) of the dataset by the saved model (its `features` kind)."""
    kind = model.description["features"]
    if kind == "pixels":
        return dataset.flat()
    device = training.choose_device(cfg.device)
    amp = bool(model.description.get("extra", {}).get("amp", True))  # as the run embedded its data
    precision = training.Precision(device, amp)
    loader = training.make_loader(TorchImages(dataset.path), batch_size=64, num_workers=0, device=device)
    network = model.network()
    if kind == "embedder":
        from nscnet.models.nscnet import extract_features, prepare_model

        return extract_features(prepare_model(network, device), loader, device, precision)
    if kind == "vae_mean":
        from nscnet.models.vaenet import encode

        return encode(network.to(device), loader, precision, device)
    raise DataError(f"run {model.run_id}: unknown features kind {kind!r} in model/model.json")


def saved_model(run_id: str, step: str) -> SavedModel:
    """The run's saved model, or a DataError saying why the run cannot predict."""
    try:
        model = load_model(run_id)
    except DataError as exc:
        hint = ""
        if step == "basenet" and "has no saved model" in str(exc):
            hint = (" (a BASENet study trial clusters cached features and saves no model: rerun `nscnet basenet` "
                    "with its parameters)")
            if tracking.get_run(run_id).data.params.get("features") == "birdnet":
                hint = " (a `basenet --features birdnet` run saves no model: predict starts from images)"
        raise DataError(f"{exc}; it cannot predict{hint}") from None
    if not model.can_predict:
        raise DataError(f"run {run_id} saved its network but no clustering chain: it cannot predict")
    return model


def check_image_shape(expected: tuple[int, int], dataset: Dataset, run_id: str, data: str) -> None:
    """DataError naming both sizes when the dataset's images (H, W) differ from the run's."""
    if tuple(expected) != tuple(dataset.image_shape):
        raise DataError(f"{data} holds images of {dataset.image_shape[0]} x {dataset.image_shape[1]} but run "
                        f"{run_id} was trained on {expected[0]} x {expected[1]}: preprocess the new recordings "
                        f"with n_mels={expected[0]} and frames={expected[1]}")


KEYS = ["segment_id", "recording", "onset_s", "offset_s"]


def source_agreement(predicted: pd.DataFrame, source: pd.DataFrame) -> dict[str, float]:
    """Agreement of predicted assignments with the source run's on the segments both hold
    (same id, recording, onset and offset): `agreement_with_source` (share with the same
    cluster, noise included) and `source_segments_matched`; {} when they share none."""
    cols = [c for c in KEYS if c in predicted.columns and c in source.columns]

    def keyed(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[cols].astype(str).assign(cluster=frame["cluster"].to_numpy())

    both = keyed(predicted).merge(keyed(source), on=cols, suffixes=("", "_source"))
    if both.empty:
        return {}
    return {"agreement_with_source": float((both["cluster"] == both["cluster_source"]).mean()),
            "source_segments_matched": float(len(both))}


def run_predict(cfg: PredictConfig) -> dict[str, Any]:
    """The `predict` entry point: exports in `cfg.out` and a new MLflow run; returns counts."""
    if not cfg.run_id:
        raise ConfigError("run_id='' : name the MLflow run id of a trained run (--run_id ...)")
    source = tracking.get_run(cfg.run_id)
    step = source.data.tags.get("nscnet.step", "")
    if step not in predictable():
        raise DataError(f"run {cfg.run_id} was made by {step or 'another program'!r}; predict supports "
                        f"{', '.join(sorted(predictable()))} runs")
    model = saved_model(cfg.run_id, step)
    dataset = read_dataset(cfg.data)
    check_image_shape(model.image_shape, dataset, cfg.run_id, cfg.data)
    with tracking.start_run(cfg, "predict", tags={"nscnet.source_run": cfg.run_id, "nscnet.source_step": step}) as run:
        features = raw_features(model, dataset, cfg)
        labels = model.assign(model.transform(features))
        with exclusive(cfg.out, what="export folder"):  # a second predict into it waits for this one
            out = write_exports(Path(cfg.out), dataset.segments, labels, all_segments=dataset.all_segments)
            tracking.log_artifact(out / "assignments.csv")
            tracking.log_artifacts(out / "audacity", "audacity")
            tracking.log_artifacts(out / "raven", "raven")
            np.save(out / "embeddings.npy", features)
            tracking.log_artifact(out / "embeddings.npy")
        kept = labels[labels >= 0]
        metrics = {"n_segments": len(labels), "n_clusters": int(len(np.unique(kept))),
                   "noise_fraction": float(np.mean(labels < 0))}
        if "assignments.csv" in tracking.list_artifacts(cfg.run_id):
            metrics.update(source_agreement(pd.read_csv(out / "assignments.csv"),
                                            pd.read_csv(tracking.download_artifact(cfg.run_id, "assignments.csv"))))
        tracking.log_params({"assign_rule": model.description["assign"]["rule"]})
        tracking.log_metrics(metrics)
    agreement = (f", agreement with the run's own clusters {metrics['agreement_with_source']:.3f} on "
                 f"{int(metrics['source_segments_matched'])} shared segments" if "agreement_with_source" in metrics else "")
    print(f"predict: {len(labels)} segments of {cfg.data} -> {metrics['n_clusters']} clusters of run "
          f"{cfg.run_id}{agreement}; exports in {out}; run {run.info.run_id}")
    return {**metrics, "run_id": run.info.run_id, "out": str(out)}
