"""UMAP as one reducer for every step (BASENet, NSCNet's final clustering, pretrain), savable
without pickle.

`Umap(params).fit_transform(x)` fits umap-learn's UMAP with the settings clamped to the data
(`umap_params`) and keeps its training input and embedding. umap-learn saves a fitted UMAP
only by pickling it (its search index holds numba-compiled state), so a saved model keeps
these two arrays instead (`arrays()`), and `Umap.restore(params, input, embedding)` rebuilds
the reducer when `transform` is first needed: UMAP fitted again on the same input with the
same `random_state` (one thread: the same neighbour graph and search index), its
`embedding_` set back to the saved coordinates, so that umap-learn's own `transform` places
new points against the layout the run clustered. Points the UMAP was fitted on keep their
fitted coordinates (umap-learn does so for its exact training matrix only; a recomputed PCA
differs from it by float round-off, and `transform` moves training points: by 0.08 on average
in a UMAP of 7,652 syllables, 0.35 to 1.2 in the 2-D UMAP of 48 test points).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def umap_params(n: int, cfg: Any) -> dict[str, Any]:
    """umap.UMAP settings of cfg (umap_dim, umap_neighbors, umap_min_dist, seed) for n points:
    at most n - 2 dimensions and n - 1 neighbours (at least 1 and 2); umap_neighbors 0 = auto
    (`nscnet.defaults.auto_umap_neighbors`; a runner has usually resolved it already)."""
    from nscnet.defaults import auto_umap_neighbors

    neighbors = cfg.umap_neighbors or auto_umap_neighbors(n)
    return {"n_components": int(max(1, min(cfg.umap_dim, n - 2))),
            "n_neighbors": int(max(2, min(neighbors, n - 1))),
            "min_dist": float(cfg.umap_min_dist), "random_state": int(cfg.seed)}


class Umap:
    """A fitted UMAP whose state is two arrays and its settings (see the module docstring)."""

    def __init__(self, params: dict[str, Any]):
        self.params = dict(params)
        self.input: np.ndarray | None = None
        self.embedding: np.ndarray | None = None
        self._reducer: Any = None

    def _new(self) -> Any:
        import umap  # heavy import (numba): only when asked for

        return umap.UMAP(**self.params, n_jobs=1)

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        """Fit on x (N, d); returns the embedding (N, n_components) float32."""
        self.input = np.ascontiguousarray(x, dtype=np.float32)
        self._reducer = self._new()
        self.embedding = np.asarray(self._reducer.fit_transform(self.input), dtype=np.float32)
        return self.embedding

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Points (M, d) into the fitted embedding space: a point the UMAP was fitted on (equal
        to a training row up to float round-off, e.g. of a recomputed PCA) keeps its fitted
        coordinates, as umap-learn does for its exact training matrix; the others go through
        umap-learn's `transform`."""
        from sklearn.neighbors import NearestNeighbors

        if self.input is None:
            raise ValueError("Umap.transform before fit_transform or restore")
        x = np.ascontiguousarray(x, dtype=np.float32)
        distance, nearest = NearestNeighbors(n_neighbors=1).fit(self.input).kneighbors(x)
        seen = distance[:, 0] <= 1e-4 * max(1.0, float(np.abs(self.input).max()))
        out = np.empty((len(x), self.embedding.shape[1]), dtype=np.float32)
        out[seen] = self.embedding[nearest[seen, 0]]
        if not seen.all():
            if self._reducer is None:
                self._reducer = self._new().fit(self.input)
                self._reducer.embedding_ = self.embedding.copy()
            out[~seen] = self._reducer.transform(x[~seen])
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {"input": self.input, "embedding": self.embedding}

    @classmethod
    def restore(cls, params: dict[str, Any], input: np.ndarray, embedding: np.ndarray) -> "Umap":
        out = cls(params)
        out.input = np.ascontiguousarray(input, dtype=np.float32)
        out.embedding = np.asarray(embedding, dtype=np.float32)
        return out


def umap_fit(x: np.ndarray, cfg: Any) -> tuple[np.ndarray, Umap]:
    """(UMAP of x (N, d) -> (N, umap_dim) float32, the fitted `Umap`) with the settings of cfg."""
    reducer = Umap(umap_params(len(x), cfg))
    return reducer.fit_transform(x), reducer
