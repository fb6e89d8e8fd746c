"""One saved-model format for every trained model, and the one loader that rebuilds it.

Every run that trains or fits something (`basenet`, `vaenet`, `nscnet`, `pretrain`) logs
`model/` through `log_model` (written by `nscnet.runs.tracking.log_torch_model`):

- `model/model.json`: what rebuilds the model, e.g.
  `{"format": "nscnet.model", "version": 1, "step": "nscnet", "image_shape": [64, 128],
  "network": {"kind": "embedder", "backbone": "small_cnn", "embedding_dim": 128,
  "pooling": "max", "input_mode": "repeat"}, "features": "embedder",
  "chain": [{"kind": "sklearn", "class": "PCA", "params": {...}, "attributes": {...}}, {"kind": "umap", ...}],
  "assign": {"rule": "nearest_neighbours", "neighbours": 5, "algorithm": "hdbscan"}, "extra": {...}}`;
- `model/weights.pt`: the network's plain state dict (`torch.save`), absent for BASENet;
- `model/arrays.npz`: the fitted chain from the model's raw features to the clustered space
  (each scikit-learn step's fitted arrays; for UMAP its training input and embedding, see
  `nscnet.features.reduction`), and what assigns a new point there: the final centroids (k-means) or
  the clustered training points and their labels (density clusterings).

`load_model(run_id)` reads it with `torch.load(..., weights_only=True)` and
`numpy.load(..., allow_pickle=False)`; a run saved in an older format (a pickled
`mlflow.pytorch` model, `model_state/`, `pretrained/`, `predict/*.joblib`) is refused with a
message saying so. Networks are rebuilt from their `network` description (`build_network`).

The assignment rule of density clusterings (HDBSCAN, OPTICS) is `NEIGHBOURS` nearest
clustered training points voting with their labels, noise included: measured against nearest
centroid in docs/nscnet.md (Predict).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nscnet.config import DataError
from nscnet.features.reduction import Umap
from nscnet.runs import tracking

MODEL_DIR = "model"  # the artifact path of every saved model
NEIGHBOURS = 5       # voters of the nearest-neighbours rule (density clusterings; measured, docs/nscnet.md)


# ------------------------------------------------------------------------------ networks

def build_network(spec: dict[str, Any]) -> Any:
    """A fresh torch network from its description (`network.spec` of a saved model)."""
    kind = spec.get("kind")
    if kind == "embedder":
        from nscnet.models.backbones import Embedder

        return Embedder(spec["backbone"], embedding_dim=int(spec["embedding_dim"]), pooling=spec["pooling"],
                        input_mode=spec["input_mode"], edge_mask=int(spec.get("edge_mask", 0)))
    if kind == "ensemble":
        from nscnet.models.backbones import EmbedderEnsemble

        return EmbedderEnsemble([build_network(member) for member in spec["members"]])
    if kind == "conv_vae":
        from nscnet.models.vae_model import ConvVAE

        return ConvVAE(tuple(spec["image_shape"]), latent_dim=int(spec["latent_dim"]), filters=tuple(spec["filters"]),
                       dense_units=int(spec["dense_units"]), residual=bool(spec["residual"]))
    raise DataError(f"unknown network kind {kind!r} in a saved model (known: embedder, ensemble, conv_vae)")


# ------------------------------------------------------------------- the fitted chain

def _sklearn_classes() -> dict[str, type]:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler

    return {cls.__name__: cls for cls in (StandardScaler, PCA, Normalizer, FunctionTransformer)}


def flatten(chain: Sequence[Any]) -> list[Any]:
    """The steps of a chain with scikit-learn Pipelines expanded, in order."""
    steps: list[Any] = []
    for step in chain:
        if hasattr(step, "steps"):  # a Pipeline
            steps += flatten([s for _, s in step.steps])
        elif step is not None:
            steps.append(step)
    return steps


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def chain_state(chain: Sequence[Any]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """(JSON description, arrays) of fitted steps: scikit-learn transformers (their parameters
    and fitted attributes) and `nscnet.features.reduction.Umap` (its settings, input and embedding)."""
    known = _sklearn_classes()
    described, arrays = [], {}
    for i, step in enumerate(flatten(chain)):
        if isinstance(step, Umap):
            described.append({"kind": "umap", "params": step.params})
            arrays.update({f"step{i}.{name}": value for name, value in step.arrays().items()})
            continue
        name = type(step).__name__
        if name not in known:
            raise TypeError(f"{name} cannot be saved without pickle (known: {', '.join(sorted(known))}, Umap)")
        attributes = {}
        for key, value in vars(step).items():
            if not key.endswith("_") or key.startswith("_"):
                continue
            if isinstance(value, np.ndarray):
                arrays[f"step{i}.{key}"] = value
            else:
                attributes[key] = _plain(value)
        params = {k: _plain(v) for k, v in step.get_params(deep=False).items()}
        described.append({"kind": "sklearn", "class": name, "params": params, "attributes": attributes})
    return described, arrays


def restore_chain(described: list[dict[str, Any]], arrays: dict[str, np.ndarray]) -> list[Any]:
    """The fitted steps of `chain_state`, rebuilt: scikit-learn transformers given back their
    fitted attributes (their own `transform` then runs), `Umap` restored from its arrays."""
    known = _sklearn_classes()
    steps = []
    for i, step in enumerate(described):
        if step["kind"] == "umap":
            steps.append(Umap.restore(step["params"], arrays[f"step{i}.input"], arrays[f"step{i}.embedding"]))
            continue
        cls = known.get(step["class"])
        if cls is None:
            raise DataError(f"saved chain step {step['class']!r} is not one of {', '.join(sorted(known))}")
        est = cls(**step["params"])
        for key, value in step["attributes"].items():
            setattr(est, key, value)
        prefix = f"step{i}."
        for key, value in arrays.items():
            if key.startswith(prefix):
                setattr(est, key[len(prefix):], value)
        steps.append(est)
    return steps


def apply_chain(steps: Sequence[Any], features: np.ndarray) -> np.ndarray:
    """features (N, D) through the fitted steps -> (N, d) float32 (non-finite values as 0)."""
    x = np.asarray(features, dtype=np.float32)
    for step in steps:
        x = step.transform(x)
    return np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


# -------------------------------------------------------------------------- assignment

def nearest_centroid(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index (N,) of the nearest centroid (k, d) of each row of points (N, d), Euclidean."""
    from sklearn.metrics import pairwise_distances_argmin

    return pairwise_distances_argmin(points, centroids).astype(np.int64)


def nearest_neighbours(points: np.ndarray, train_points: np.ndarray, train_labels: np.ndarray,
                       neighbours: int = NEIGHBOURS) -> np.ndarray:
    """Label (N,) of each row of points: the majority label (noise, -1, included) of its
    `neighbours` nearest training points (Euclidean); ties go to the label of the nearer voters."""
    from sklearn.neighbors import NearestNeighbors

    k = int(min(neighbours, len(train_points)))
    _, index = NearestNeighbors(n_neighbors=k).fit(train_points).kneighbors(points)
    votes = np.asarray(train_labels, dtype=np.int64)[index] + 1                  # (N, k), nearest first; 0 = noise
    scores = np.zeros((len(points), int(votes.max(initial=0)) + 1))
    weights = 1.0 + 1e-6 * np.arange(k, 0, -1)                                  # nearer voters break ties
    np.add.at(scores, (np.repeat(np.arange(len(points)), k), votes.ravel()), np.tile(weights, len(points)))
    return scores.argmax(axis=1).astype(np.int64) - 1


def assignment(labels: np.ndarray, processed: np.ndarray, centroids: np.ndarray | None,
               algorithm: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(description, arrays) of the rule that assigns a new point of the clustered space:
    k-means -> its nearest final centroid; density clusterings -> nearest-neighbours vote."""
    if algorithm == "kmeans" and centroids is not None:
        return {"rule": "nearest_centroid", "algorithm": algorithm}, {"centroids": np.asarray(centroids, np.float32)}
    return ({"rule": "nearest_neighbours", "neighbours": NEIGHBOURS, "algorithm": algorithm},
            {"train_points": np.asarray(processed, np.float32), "train_labels": np.asarray(labels, np.int64)})


# ------------------------------------------------------------------------- save, load

def log_model(step: str, image_shape: Sequence[int], *, network: Any = None, chain: Sequence[Any] | None = None,
              labels: np.ndarray | None = None, processed: np.ndarray | None = None,
              centroids: np.ndarray | None = None, algorithm: str = "kmeans", features: str | None = None,
              extra: dict[str, Any] | None = None) -> None:
    """Log the run's model as `model/` (see the module docstring) to the active run.

    network: the trained torch network (its `spec` describes it), None for BASENet;
    chain: the fitted steps from the raw features (`features`: "embedder", "vae_mean" or
    "pixels") to the clustered space, None when unknown (then the run cannot predict);
    labels, processed, centroids, algorithm: the final clustering in that space.
    """
    description: dict[str, Any] = {"step": step, "image_shape": [int(v) for v in image_shape],
                                   "network": dict(network.spec) if network is not None else None,
                                   "features": features or _features_of(network), "extra": extra or {}}
    arrays: dict[str, np.ndarray] = {}
    if chain is not None and labels is not None:
        description["chain"], arrays = chain_state(chain)
        description["assign"], more = assignment(labels, processed, centroids, algorithm)
        arrays.update(more)
    state = None
    if network is not None:
        state = network.state_dict()
    tracking.log_torch_model(description, state, arrays, name=MODEL_DIR)


def _features_of(network: Any) -> str:
    if network is None:
        return "pixels"
    return {"embedder": "embedder", "ensemble": "embedder", "conv_vae": "vae_mean"}[network.spec["kind"]]


@dataclass
class SavedModel:
    """A saved model as read back: its description, network weights and arrays."""

    run_id: str
    description: dict[str, Any]
    weights: dict[str, Any] | None
    arrays: dict[str, np.ndarray]

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.description["image_shape"])

    @property
    def can_predict(self) -> bool:
        return "chain" in self.description and "assign" in self.description

    def network(self) -> Any:
        """The rebuilt network with its weights, in eval mode, on the CPU."""
        spec = self.description.get("network")
        if not spec or self.weights is None:
            raise DataError(f"run {self.run_id} saved no network (step {self.description.get('step')!r})")
        model = build_network(spec)
        model.load_state_dict(self.weights)
        return model.eval()

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Raw features (N, D) of new segments -> the run's clustered space (N, d)."""
        return apply_chain(restore_chain(self.description["chain"], self.arrays), features)

    def assign(self, processed: np.ndarray) -> np.ndarray:
        """Cluster (N,) of points of the clustered space, by the run's rule (-1: noise)."""
        rule = self.description["assign"]
        if rule["rule"] == "nearest_centroid":
            return nearest_centroid(processed, self.arrays["centroids"])
        return nearest_neighbours(processed, self.arrays["train_points"], self.arrays["train_labels"],
                                  int(rule.get("neighbours", NEIGHBOURS)))


def load_model(run_id: str) -> SavedModel:
    """The saved model of a run (`model/`); DataError when it has none or an older format."""
    description, weights, arrays = tracking.load_torch_model(run_id, MODEL_DIR)
    return SavedModel(run_id, description, weights, arrays)
