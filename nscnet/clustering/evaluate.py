"""The shared end of every model run: post-process, cluster, score, draw, export, log.

`evaluate_and_log(features, dataset, params)` is what BASENet, VAENet and NSCNet call on their
final features inside their MLflow run. Its pieces are usable alone, e.g. per epoch:

- `cluster_features(features, params)`: post-processing + clustering, no logging;
- `score(processed, result, params, truth)`: internal (+ truth) metrics as one dict;
- `log_figures(...)`, `log_exports(...)`: the figures and the artifacts of one clustering;
- `nscnet.models.saved.log_model`, called with `save_model=<step>`: the run's model (`model/`:
  network, fitted chain to the clustered space, assignment rule) for `nscnet predict`.

Reference labels (`params.truth`) are read only to score and to draw the contingency table;
nothing here fits on them.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np

from nscnet.clustering.cluster import (NOISE, ClusterResult, fit_clusters, internal_metrics, noise_warning,
                                       silhouettes, sweep_seeds, truth_metrics)
from nscnet.features.postprocess import postprocess
from nscnet.report import plots
from nscnet.report.export import write_exports
from nscnet.runs import console, tracking

log = logging.getLogger(__name__)

# Embedding files wider than this are not logged (raw flattened images); the processed ones are.
MAX_EMBEDDING_DIM = 2048


def cluster_features(features: np.ndarray, params: Any, *, k: int | None = None, min_samples: int | None = None,
                     init: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, ClusterResult]:
    """Post-process features (N, D) and cluster them: (labels (N,), processed (N, d), result)."""
    processed, _ = postprocess(features, params)
    result = fit_clusters(processed, params, k=k, min_samples=min_samples, init=init)
    return result.labels, processed, result


def score(processed: np.ndarray, result: ClusterResult, params: Any, truth: np.ndarray | None = None, *,
          silhouette_value: Any = "compute") -> dict[str, Any]:
    """Metrics of one clustering: inertia (k-means), internal metrics, *_truth when truth is given
    (`silhouette_value`: its silhouette when already measured, `internal_metrics`)."""
    metrics: dict[str, Any] = {}
    if result.inertia is not None:
        metrics["inertia"] = result.inertia
    metrics.update(internal_metrics(processed, result.labels, sample_size=params.silhouette_sample, seed=params.seed,
                                    silhouette_value=silhouette_value))
    if truth is not None:
        metrics.update(truth_metrics(result.labels, truth))
    return metrics


def add_stability(processed: np.ndarray, result: ClusterResult, params: Any, metrics: dict[str, Any], *,
                  step: int | None = None) -> None:
    """`stability` (nscnet.clustering.selection.resample_stability) into metrics and the active run, when
    `params.stability_runs` > 0; the clustering re-fitted is the one of `result` (k, min_samples)."""
    runs = getattr(params, "stability_runs", 0)
    if not runs:
        return
    from nscnet.config import replace
    from nscnet.clustering.selection import resample_stability

    chosen = {"k": metrics["selected_k"]} if "selected_k" in metrics else {}
    if "selected_min_samples" in metrics:
        chosen = {"min_samples": metrics["selected_min_samples"]}
    value = resample_stability(processed, replace(params, **chosen), runs, reference=result.labels)
    metrics["stability"] = value
    if value is not None:
        tracking.log_metrics({"stability": value}, step=step)


NOISE_TAG = "nscnet.warning.noise"


def flag_noise(result: ClusterResult, params: Any, n: int) -> None:
    """Tag the active run (`nscnet.warning.noise`, shown in its description) when the final
    clustering is all or mostly noise; `fit_clusters` has already logged the warning."""
    if params.algorithm == "kmeans":
        return
    from nscnet.defaults import resolve

    used = resolve(params, n)[0]
    text = noise_warning(params.algorithm, result.n_clusters, result.noise_fraction,
                         min_cluster_size=used.min_cluster_size, min_samples=used.min_samples)
    if text:
        tracking.set_tags({NOISE_TAG: text})


def sweep_of(params: Any) -> tuple[str, tuple[int, ...]] | None:
    """("k", values) or ("min_samples", values) when params ask for a sweep of their algorithm."""
    if params.algorithm == "kmeans":
        if params.min_samples_values:
            log.warning("min_samples_values is ignored by algorithm=kmeans")
        return ("k", tuple(sorted(set(params.k_values)))) if params.k_values else None
    if params.k_values:
        log.warning("k_values is ignored by algorithm=%s", params.algorithm)
    if params.min_samples_values:
        return "min_samples", tuple(sorted(set(params.min_samples_values)))
    return None


def log_figures(processed: np.ndarray, labels: np.ndarray, truth: np.ndarray | None = None, *,
                prefix: str = "", seed: int = 0) -> None:
    """LDA 2-D projection, rank-ordered sizes and (with truth) the contingency heatmap."""
    tracking.log_figure(plots.lda_projection(processed, labels, seed=seed), f"{prefix}lda_2d")
    tracking.log_figure(plots.cluster_sizes(labels), f"{prefix}cluster_sizes")
    if truth is not None:
        tracking.log_figure(plots.contingency(labels, truth), f"{prefix}contingency")


CLUSTERED = "clustered.npy"  # the clustered space (float16, N x d): exemplars and 2-D map of `nscnet report`


def log_exports(dataset: Any, labels: np.ndarray, embeddings: np.ndarray | None,
                clustered: np.ndarray | None = None) -> None:
    """assignments.csv, audacity/, raven/, embeddings.npy and (when given and at most
    MAX_EMBEDDING_DIM wide) clustered.npy, the features as clustered, as artifacts of the active run.

    Written straight into the run's artifact folder when the store is local (`tracking.artifact_dir`).
    """
    with tracking.artifact_dir() as out:
        write_exports(out, dataset.segments, labels, all_segments=getattr(dataset, "all_segments", None))
        if embeddings is not None:
            np.save(out / "embeddings.npy", np.asarray(embeddings, dtype=np.float32))
        if clustered is not None and np.shape(clustered)[1] <= MAX_EMBEDDING_DIM:
            np.save(out / CLUSTERED, np.asarray(clustered, dtype=np.float16))


def _selected(values: tuple[int, ...], rows: list[dict[str, Any]]) -> int:
    """Index of the sweep value with the best silhouette (the paper's criterion); first if none."""
    scores = [r.get("silhouette") for r in rows]
    if all(s is None for s in scores):
        return 0
    return int(np.nanargmax([np.nan if s is None else s for s in scores]))


def evaluate_and_log(features: np.ndarray, dataset: Any, params: Any, *, embeddings: np.ndarray | None = None,
                     step: int | None = None, prefix_figures: str = "", save_model: str = "",
                     network: Any = None, feature_chain: Sequence[Any] = (),
                     model_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Post-process, cluster (or sweep), score, draw and export; everything logged to the active run.

    features: (N, D) float array of the dataset's N ok segments, in image-row order.
    params: a config with the fields of `nscnet.config.ClusterParams`.
    embeddings: what to log as embeddings.npy (default: the features, or the processed
    features when the features are wider than MAX_EMBEDDING_DIM).
    save_model: the step name under which to log the run's model (`nscnet.models.saved`,
    "" = none): `network` (None for BASENet), the fitted chain from the raw features to the
    clustered space (`feature_chain`, the fitted steps that made `features` from the model's
    raw features, e.g. BASENet's PCA, then this post-processing) and the final clustering.
    Returns the metrics of the final (or, in a sweep, the selected) clustering.
    """
    truth = dataset.truth() if params.truth else None  # fails early when there are no labels
    started = time.perf_counter()
    processed, notes = postprocess(features, params)
    tracking.log_params({"pca_dim_used": notes["pca_dim_used"], "pca_clamped": notes["pca_clamped"]})
    if "warning" in notes:
        tracking.set_tags({"nscnet.warning": notes["warning"]})

    sweep = sweep_of(params)
    if sweep is None:
        result = fit_clusters(processed, params)
        metrics = score(processed, result, params, truth)
        tracking.log_metrics(metrics, step=step)
    else:
        name, values = sweep
        rows, results = [], []
        shared = {}
        if name == "k" and params.algorithm == "kmeans":  # one k-means++ seeding for every K
            shared["seeds"] = sweep_seeds(processed, values, n_init=params.n_init, seed=params.seed,
                                          backend=params.kmeans_backend)
        for value in console.bar(values, desc=f"sweep {name}", unit=name):
            results.append(fit_clusters(processed, params, **{name: value}, **shared))
        measured: list[Any] = ["compute"] * len(values)
        if not any((r.labels == NOISE).any() for r in results):  # the same points: one distance pass for all
            measured = silhouettes(processed, [r.labels for r in results], sample_size=params.silhouette_sample,
                                   seed=params.seed)
        for value, result, silhouette_value in zip(values, results, measured):
            row = score(processed, result, params, truth, silhouette_value=silhouette_value)
            tracking.log_metrics(row, step=value)  # the swept value is the step
            rows.append(row)
        series = {m: [r.get(m) for r in rows] for m in ("inertia", "silhouette", "n_clusters", "noise_fraction",
                                                         "nmi_truth") if any(r.get(m) is not None for r in rows)}
        if name == "k":
            series.pop("n_clusters", None), series.pop("noise_fraction", None)
        xlabel = "K (clusters)" if name == "k" else "min_samples"
        tracking.log_figure(plots.metric_curve(values, series, xlabel, f"Sweep of {name} ({params.algorithm})",
                                               log_x=name == "k"), f"{prefix_figures}sweep_{name}")
        best = _selected(values, rows)
        result, metrics = results[best], dict(rows[best])
        tracking.log_params({f"selected_{name}": values[best]})
        metrics[f"selected_{name}"] = values[best]

    flag_noise(result, params, len(processed))
    add_stability(processed, result, params, metrics, step=step)
    metrics["cluster_seconds"] = time.perf_counter() - started
    tracking.log_metrics({"cluster_seconds": metrics["cluster_seconds"]}, step=step)
    if getattr(params, "figures", True):
        log_figures(processed, result.labels, truth, prefix=prefix_figures, seed=params.seed)
    if save_model:
        from nscnet.models.saved import log_model

        log_model(save_model, dataset.image_shape, network=network, chain=[*feature_chain, notes["pipeline"]],
                  labels=result.labels, processed=processed, centroids=result.centroids,
                  algorithm=params.algorithm, extra=model_extra)
    if params.export:
        if embeddings is None:
            embeddings = features if np.shape(features)[1] <= MAX_EMBEDDING_DIM else processed
        log_exports(dataset, result.labels, embeddings, processed)
    return metrics
