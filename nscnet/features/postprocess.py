"""Feature post-processing before clustering, shared by every model.

Optional standardization ("normalization"), PCA to `pca_dim` components, whitening and L2
normalization, in that order, as one scikit-learn `Pipeline` fitted once per call.

`pca_dim` -1 (auto) is max(sqrt(N), N/16) components, at most 128 (`nscnet.defaults.auto_pca_dim`; the step
runners resolve it, and log it, before they get here). A given `pca_dim` is clamped to what the
data allows (at most N - 1 components, since centred data of N points has rank N - 1 at most,
and at most D); the clamp is reported in the returned notes, which callers log as params.
Whitening close to N components makes every point about equally far from every other
(docs/clustering.md): with whitening on, `pca_dim` is also clamped to N / 4 (a no-op from
N = 4 x pca_dim on: 512 segments for 128), and that is warned about and noted.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(100, 20))
    >>> out, notes = postprocess(x, PostprocessParams(pca_dim=8))
    >>> out.shape, notes["pca_dim_used"]
    ((100, 8), 8)

Archive scale (`postprocess_images`): the flattened images of 100,000 segments of 64 x 512 are
13 GB in float32, more than memory. Their standardization and PCA are then fitted on a seeded
sample of `pca_fit_rows(N, D)` rows (1 GiB of float32 at most, all rows below that: the shared
data sets are fitted whole) and applied chunk by chunk from the memmap, so memory stays at the
sample plus one chunk. benchmarks/archive.py measures a sample fit against the full fit where
both fit in memory (docs/scale.md): explained variance and k-means inertia within 1%.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler

from nscnet.config import DataError, PostprocessParams  # noqa: F401  (PostprocessParams: doc example)
from nscnet.defaults import WHITEN_MAX_SHARE, auto_pca_dim

log = logging.getLogger(__name__)

# A PCA over more than this many bytes of float32 rows is fitted on a seeded sample of rows
# (`pca_fit_rows`): at 64 x 512 images, 8,192 rows.
PCA_FIT_BYTES = 1 << 30
PCA_FIT_MIN_ROWS = 2048


def build_postprocess(*, normalize: bool, pca_dim: int, whiten: bool, l2: bool, seed: int,
                      n_samples: int, n_features: int) -> tuple[Pipeline, dict[str, Any]]:
    """The unfitted post-processing pipeline for data of shape (n_samples, n_features).

    Returns (pipeline, notes); notes hold `pca_dim_used` (0 = no PCA), `pca_clamped` and,
    when they apply, `warning` texts. The pipeline always has at least one step (identity).
    """
    notes: dict[str, Any] = {"pca_dim_used": 0, "pca_clamped": False}
    steps: list[tuple[str, Any]] = []
    if normalize:
        steps.append(("normalize", StandardScaler()))
    if pca_dim < 0:  # auto, for a caller that did not resolve it (the runners do, nscnet.defaults)
        pca_dim = auto_pca_dim(n_samples, whiten=whiten)
    if pca_dim > 0:
        allowed = max(1, min(n_samples - 1, n_features))
        used = min(pca_dim, allowed)
        if whiten and used > max(1, int(WHITEN_MAX_SHARE * n_samples)):
            text = (f"whitening {used} PCA components of only {n_samples} samples makes every point "
                    f"about equally far from every other: pca_dim clamped to "
                    f"{max(1, int(WHITEN_MAX_SHARE * n_samples))} (N/4) while whiten=true; set whiten=false "
                    "to keep more components")
            used = max(1, int(WHITEN_MAX_SHARE * n_samples))
            notes["warning"] = text
            log.warning(text)
        if used < pca_dim:
            notes["pca_clamped"] = True
            log.warning("pca_dim=%d clamped to %d: the data has %d samples of %d features%s",
                        pca_dim, used, n_samples, n_features, " (whitened)" if whiten else "")
        notes["pca_dim_used"] = used
        steps.append(("pca", PCA(n_components=used, whiten=whiten, random_state=seed)))
    elif whiten:
        log.info("whiten=true has no effect without PCA (pca_dim=0)")
    if l2:
        steps.append(("l2", Normalizer(norm="l2")))
    if not steps:
        steps.append(("identity", FunctionTransformer()))
    return Pipeline(steps), notes


def postprocess(features: np.ndarray, params: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit and apply the post-processing of `params` to features (N, D) -> (N, d) float32.

    `params` is any config with the fields normalize, pca_dim, whiten, l2 and seed.
    The notes also hold the fitted scikit-learn `pipeline` (for `predict`).
    DataError for fewer than 2 samples, non-finite values or all-identical feature vectors.
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise DataError(f"features must be a 2-D array (N, D), got shape {features.shape}")
    n_samples, n_features = features.shape
    if n_samples < 2:
        raise DataError(f"clustering needs at least 2 segments, the data has {n_samples}")
    if not np.isfinite(features).all():
        raise DataError("the features hold NaN or infinite values")
    features = features.astype(np.float32, copy=False)
    if not (features != features[0]).any():
        raise DataError(f"all {n_samples} feature vectors are identical (identical images?): "
                        "there is nothing to cluster")
    pipeline, notes = build_postprocess(normalize=params.normalize, pca_dim=params.pca_dim,
                                        whiten=params.whiten, l2=params.l2, seed=getattr(params, "seed", 0),
                                        n_samples=n_samples, n_features=n_features)
    out = pipeline.fit_transform(features)
    notes["pipeline"] = pipeline  # fitted: what `predict` applies to new features
    if "pca" in pipeline.named_steps:
        notes["pca_explained_variance"] = float(pipeline.named_steps["pca"].explained_variance_ratio_.sum())
    # whitening a component of (numerically) zero variance divides by zero: keep the finite part
    out = np.nan_to_num(np.asarray(out, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return out, notes


def pca_fit_rows(n_samples: int, n_features: int, *, max_bytes: int = PCA_FIT_BYTES) -> int:
    """Rows the post-processing of (n_samples, n_features) float32 data is fitted on: all of them
    when they fit in `max_bytes`, else a sample of max_bytes / (4 n_features) rows (at least
    PCA_FIT_MIN_ROWS)."""
    return int(min(n_samples, max(PCA_FIT_MIN_ROWS, max_bytes // (4 * max(n_features, 1)))))


def postprocess_images(images: np.ndarray, params: Any, *, fit_rows: int | None = None,
                       chunk: int = 2048) -> tuple[np.ndarray, dict[str, Any]]:
    """`postprocess` of the flattened images (N, H, W) (a memmap: read chunk by chunk), fitted on
    a seeded sample of `fit_rows` rows (default `pca_fit_rows`), applied to every row.

    With fit_rows >= N this is `postprocess(images.reshape(N, -1))`, without the full copy only
    when N is small enough for that copy anyway. Notes as `postprocess`'s, plus `pca_fit_rows`.
    """
    n = int(images.shape[0])
    d = int(np.prod(images.shape[1:]))
    fit_rows = pca_fit_rows(n, d) if fit_rows is None else int(min(max(fit_rows, 2), n))
    if fit_rows >= n:
        out, notes = postprocess(_flat_rows(images, np.arange(n), chunk), params)
        notes["pca_fit_rows"] = n
        return out, notes
    rows = np.sort(np.random.default_rng(getattr(params, "seed", 0)).choice(n, size=fit_rows, replace=False))
    _, notes = postprocess(_flat_rows(images, rows, chunk), params)  # fits the pipeline on the sample
    pipeline = notes["pipeline"]
    out = None
    for start in range(0, n, chunk):
        block = np.asarray(images[start:start + chunk], dtype=np.float32).reshape(-1, d)
        if not np.isfinite(block).all():
            raise DataError(f"the images hold NaN or infinite values (rows {start}..{start + len(block) - 1})")
        done = np.asarray(pipeline.transform(block), dtype=np.float32)
        if out is None:
            out = np.empty((n, done.shape[1]), dtype=np.float32)
        out[start:start + len(done)] = done
    notes["pca_fit_rows"] = fit_rows
    log.info("post-processing fitted on a sample of %d of %d rows (%d features; full data %.1f GB in float32)",
             fit_rows, n, d, n * d * 4 / 1e9)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0), notes


def _flat_rows(images: np.ndarray, rows: np.ndarray, chunk: int) -> np.ndarray:
    """images[rows] flattened to (len(rows), H * W) float32, read chunk by chunk (sorted rows)."""
    d = int(np.prod(images.shape[1:]))
    out = np.empty((len(rows), d), dtype=np.float32)
    for start in range(0, len(rows), chunk):
        pick = rows[start:start + chunk]
        if len(pick) and pick[-1] - pick[0] + 1 == len(pick):  # a contiguous run: a slice of the memmap
            block = images[int(pick[0]):int(pick[-1]) + 1]
        else:
            block = images[pick]
        out[start:start + len(pick)] = np.asarray(block, dtype=np.float32).reshape(len(pick), d)
    return out
