"""What a report shows, gathered from a run and computed from it: pure functions plus `load_run`.

`load_run(run_id, data, audio)` reads a clustering run's `assignments.csv`, its clustered space
(`clustered.npy`, else `embeddings.npy`; for a curated or predict run, its parent's), its params,
metrics and tags, the linked Zipf run, and opens its dataset. The pure functions below take
arrays: cluster centres, exemplars, similar clusters, average images, transitions, purity.

Reference labels (the dataset's `label` column) are only counted here (purity, contingency),
never fitted on.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nscnet.config import DataError
from nscnet.images.dataset import Dataset, read_dataset
from nscnet.report.export import ASSIGNMENTS, NOISE, cluster_names

log = logging.getLogger(__name__)

CLUSTERED = "clustered.npy"
EMBEDDINGS = "embeddings.npy"
PARENT_TAGS = ("nscnet.parent_run", "nscnet.source_run")  # curated / predict runs point back with these


@dataclass
class RunData:
    """Everything a report is built from.

    table: assignments (segment_id, recording, onset_s, offset_s, cluster, name), one row per
    dataset row, in dataset row order; space: (N, d) float32 clustered space or None.
    """

    run_id: str
    run_name: str
    step: str
    experiment: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    table: pd.DataFrame
    dataset: Dataset
    space: np.ndarray | None
    space_source: str
    audio_dir: Path | None
    audio_note: str = ""
    zipf: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return self.table["cluster"].to_numpy(dtype=np.int64)

    def truth(self) -> np.ndarray | None:
        """Reference label text per segment, or None when the dataset has none."""
        labels = self.dataset.segments["label"].fillna("").astype(str)
        return None if (labels.str.strip() == "").all() else labels.to_numpy()


# ------------------------------------------------------------------------- pure functions

def cluster_ids_by_size(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster ids, sizes), largest first (ties by id), noise left out."""
    ids, counts = np.unique(labels[labels != NOISE], return_counts=True)
    order = np.lexsort((ids, -counts))
    return ids[order], counts[order]


def centres(space: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(len(ids), d) mean of each cluster's members in the clustering space."""
    out = np.zeros((len(ids), space.shape[1]), dtype=np.float64)
    for i, c in enumerate(ids):
        out[i] = space[labels == c].mean(axis=0)
    return out


def exemplars(space: np.ndarray, labels: np.ndarray, ids: np.ndarray, n_typical: int,
              n_atypical: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per cluster: (rows of its n_typical members nearest its centre, nearest first; rows of
    up to n_atypical of the others, farthest first). Euclidean in the clustering space; ties by row."""
    centre = centres(space, labels, ids)
    out = {}
    for i, c in enumerate(ids):
        members = np.flatnonzero(labels == c)
        distance = np.linalg.norm(space[members].astype(np.float64) - centre[i], axis=1)
        order = members[np.lexsort((members, distance))]
        typical = order[:n_typical]
        rest = order[len(typical):]
        out[int(c)] = (typical, rest[::-1][:n_atypical])
    return out


def similar_clusters(centre: np.ndarray, ids: np.ndarray, n: int = 3) -> dict[int, list[tuple[int, float]]]:
    """Per cluster: its n nearest other clusters by centre distance, [(id, distance), ...]."""
    diff = centre[:, None, :] - centre[None, :, :]
    distance = np.sqrt((diff ** 2).sum(axis=2))
    np.fill_diagonal(distance, np.inf)
    out = {}
    for i, c in enumerate(ids):
        order = np.argsort(distance[i], kind="stable")[:n]
        out[int(c)] = [(int(ids[j]), float(distance[i, j])) for j in order if np.isfinite(distance[i, j])]
    return out


def average_images(images: np.ndarray, labels: np.ndarray, ids: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """(len(ids), H, W) float32 mean image of each cluster, read from the memmap chunk by chunk."""
    position = {int(c): i for i, c in enumerate(ids)}
    slot = np.array([position.get(int(c), -1) for c in labels])
    n, h, w = images.shape
    sums = np.zeros((len(ids), h * w), dtype=np.float64)
    for start in range(0, n, chunk):
        block = np.asarray(images[start:start + chunk], dtype=np.float32).reshape(-1, h * w)
        rows = slot[start:start + len(block)]
        keep = rows >= 0
        onehot = np.zeros((len(ids), int(keep.sum())), dtype=np.float32)
        onehot[rows[keep], np.arange(int(keep.sum()))] = 1.0
        sums += onehot @ block[keep]
    counts = np.bincount(slot[slot >= 0], minlength=len(ids)).astype(np.float64)
    return (sums / np.maximum(counts, 1)[:, None]).reshape(len(ids), h, w).astype(np.float32)


def transitions(table: pd.DataFrame, ids: np.ndarray) -> np.ndarray:
    """(K, K) counts of cluster a followed by cluster b within a recording (onset order), rows and
    columns in the order of ids; pairs with noise are left out."""
    position = {int(c): i for i, c in enumerate(ids)}
    out = np.zeros((len(ids), len(ids)), dtype=np.int64)
    ordered = table.sort_values(["recording", "onset_s"], kind="stable")
    for _, part in ordered.groupby("recording", sort=False):
        seq = [position.get(int(c), -1) for c in part["cluster"]]
        for a, b in zip(seq[:-1], seq[1:]):
            if a >= 0 and b >= 0:
                out[a, b] += 1
    return out


def contingency_table(labels: np.ndarray, truth: np.ndarray, ids: np.ndarray) -> pd.DataFrame:
    """Counts, rows = cluster ids (in the order given, noise last when present), columns = reference labels."""
    table = pd.crosstab(pd.Series(labels, name="cluster"), pd.Series(truth, name="label"))
    rows = [int(c) for c in ids] + ([NOISE] if (labels == NOISE).any() else [])
    return table.reindex(index=rows, fill_value=0)


def purity(labels: np.ndarray, truth: np.ndarray) -> float:
    """Share of the non-noise segments whose reference label is their cluster's majority label."""
    keep = labels != NOISE
    if not keep.any():
        return float("nan")
    table = pd.crosstab(labels[keep], truth[keep])
    return float(table.max(axis=1).sum() / keep.sum())


def sound_columns(width: int, duration: float, window_s: float, pad: str, margin: int = 2) -> slice:
    """The image columns that hold the segment's sound rather than padding: a segment of
    `duration` s padded to `window_s` s (preprocess `duration_s`) at the `pad` end (preprocess `pad`)."""
    if not window_s or not np.isfinite(duration) or duration >= window_s:
        return slice(0, width)
    n = min(width, int(np.ceil(width * duration / window_s)) + margin)
    if pad == "start":  # padding first: the sound is at the end
        return slice(width - n, width)
    if pad == "center":
        start = (width - n) // 2
        return slice(start, start + n)
    return slice(0, n)


def names_of(table: pd.DataFrame) -> dict[int, str]:
    """Cluster id -> display name: the `name` column of a curated run, else 'cluster_07'."""
    labels = table["cluster"].to_numpy(dtype=np.int64)
    names = table["name"].astype(str).to_numpy() if "name" in table else cluster_names(labels)
    return {int(c): str(n) for c, n in zip(labels, names)}


# ---------------------------------------------------------------------------- reading a run

def _download(run_id: str, path: str, tmp: str) -> Path | None:
    from nscnet.runs import tracking

    try:
        if path not in tracking.list_artifacts(run_id):
            return None
    except Exception:
        return None
    return tracking.download_artifact(run_id, path, tmp)


def _lineage(run: Any) -> list[Any]:
    """The run, then the runs it points back to (curated from, predicted with), nearest first."""
    from nscnet.runs import tracking

    chain, seen = [run], {run.info.run_id}
    while len(chain) < 8:
        parent = next((chain[-1].data.tags[t] for t in PARENT_TAGS if chain[-1].data.tags.get(t)), None)
        if not parent or parent in seen:
            break
        seen.add(parent)
        chain.append(tracking.get_run(parent))
    return chain


def _space(chain: list[Any], n: int, tmp: str) -> tuple[np.ndarray | None, str]:
    """The clustered space of the run (or its nearest ancestor) with n rows; else its embeddings."""
    for name in (CLUSTERED, EMBEDDINGS):
        for run in chain:
            local = _download(run.info.run_id, name, tmp)
            if local is None:
                continue
            space = np.load(local).astype(np.float32)
            if space.ndim == 2 and len(space) == n:
                where = "" if run is chain[0] else f" of run {run.info.run_id}"
                note = "" if name == CLUSTERED else " (the clustered space was not logged: embeddings as they are)"
                return np.nan_to_num(space), f"{name}{where}{note}"
    return None, "none: the run logged neither clustered.npy nor embeddings.npy"


def _resolve(path: str, *bases: Path) -> Path | None:
    candidate = Path(path)
    if candidate.is_absolute():
        return candidate if candidate.exists() else None
    for base in (Path.cwd(), *bases):
        if (base / candidate).exists():
            return (base / candidate).resolve()
    return None


def _dataset_path(chain: list[Any], data: str) -> Path:
    if data:
        found = _resolve(data)
        if found is None:
            raise DataError(f"data={data!r}: no such dataset folder")
        return found
    for run in chain:
        value = run.data.params.get("data")
        if value:
            found = _resolve(value)
            if found is None:
                raise DataError(f"run {chain[0].info.run_id} used data={value!r}, which is not there from "
                                f"{Path.cwd()}: pass --data <dataset folder>")
            return found
    raise DataError(f"run {chain[0].info.run_id} has no data parameter: pass --data <dataset folder>")


def _audio_dir(dataset: Dataset, audio: str) -> tuple[Path | None, str]:
    if audio:
        found = _resolve(audio)
        if found is None:
            raise DataError(f"audio={audio!r}: no such folder of recordings")
        return found, ""
    value = dataset.meta.get("params", {}).get("audio", "")
    found = _resolve(value, dataset.path.parent) if value else None
    if found is None:
        note = (f"recordings not found (preprocess read them from {value!r}): no audio; pass --audio <folder>"
                if value else "the dataset names no audio folder: no audio; pass --audio <folder>")
        log.warning(note)
        return None, note
    return found, ""


def _align(assignments: pd.DataFrame, dataset: Dataset, run_id: str) -> pd.DataFrame:
    """Assignments in dataset row order (matched on segment_id)."""
    ids = dataset.segments["segment_id"].astype(str).to_numpy()
    table = assignments.assign(segment_id=assignments["segment_id"].astype(str))
    if len(table) == len(ids) and (table["segment_id"].to_numpy() == ids).all():
        return table.reset_index(drop=True)
    index = pd.Index(table["segment_id"])
    if not index.is_unique:
        raise DataError(f"run {run_id}: assignments.csv repeats segment ids")
    where = index.get_indexer(ids)
    if (where < 0).any() or len(table) != len(ids):
        raise DataError(f"run {run_id}: assignments.csv ({len(table)} segments) does not match the dataset "
                        f"{dataset.path} ({len(ids)} segments): pass the run's own dataset with --data")
    return table.iloc[where].reset_index(drop=True)


def _zipf(run: Any) -> dict[str, Any]:
    """The metrics of the Zipf run linked to this run (tag nscnet.zipf_run), if any."""
    from nscnet.runs import tracking

    zipf_id = run.data.tags.get("nscnet.zipf_run")
    if not zipf_id:
        return {}
    try:
        metrics = tracking.get_run(zipf_id).data.metrics
    except DataError:
        return {}
    return {"run_id": zipf_id, **{k: v for k, v in metrics.items() if k.startswith("zipf_") or k in ("chao1", "ace")}}


def load_run(run_id: str, data: str = "", audio: str = "") -> RunData:
    """Gather a clustering run for its report; DataError naming what is missing."""
    from nscnet.runs import tracking

    if not run_id:
        from nscnet.config import ConfigError

        raise ConfigError("run_id='' : name the MLflow run id of a clustering run (--run_id ...)")
    run = tracking.get_run(run_id)
    chain = _lineage(run)
    with tempfile.TemporaryDirectory() as tmp:
        local = _download(run_id, ASSIGNMENTS, tmp)
        if local is None:
            step = run.data.tags.get("nscnet.step", "?")
            raise DataError(f"run {run_id} ({step}) has no {ASSIGNMENTS}: not a clustering run, or run with "
                            "export=false")
        assignments = pd.read_csv(local, dtype={"segment_id": str, "recording": str, "name": str},
                                  keep_default_na=False)
        dataset = read_dataset(_dataset_path(chain, data))
        table = _align(assignments, dataset, run_id)
        space, source = _space(chain, len(table), tmp)
    audio_dir, note = _audio_dir(dataset, audio)
    return RunData(run_id=run_id, run_name=run.info.run_name or "", step=run.data.tags.get("nscnet.step", ""),
                   experiment=tracking.experiment_name(run.info.experiment_id), params=dict(run.data.params),
                   metrics=dict(run.data.metrics), tags=dict(run.data.tags), table=table, dataset=dataset,
                   space=space, space_source=source, audio_dir=audio_dir, audio_note=note, zipf=_zipf(run))
