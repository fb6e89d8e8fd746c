"""`nscnet curate`: a curated copy of a clustering run, made from merges, renames and drops, a
names CSV (the report's download), or label tracks edited in Audacity.

Edits apply in this order: the names CSV (`cluster,name`; clusters given the same name merge
into the smallest of them; the name `noise` drops a cluster), then `--merge` (each group into
its first cluster, which keeps its name), `--rename`, `--drop` (the cluster becomes noise, -1).
With `--audacity DIR`, the edited label tracks (`DIR/<recording>.txt`, as `nscnet` exported
them) are read back instead: each segment takes the label that overlaps it most in time; a
label `cluster_07` (or a name of the run) means that cluster, `noise` noise, any other text a
new type of that name; a segment no label overlaps becomes noise; a recording without a track
keeps its labels.

The new run (step `curate`) is linked to its parent by the tags `nscnet.parent_run` and
`nscnet.curated_from` (and the parent tags `nscnet.curated_run`); it logs the curated
`assignments.csv` (with a `name` column), Audacity and Raven tracks, `curation.json` (the edits,
sizes before and after) and how much changed: `nmi_parent`, `ari_parent`, `changed_segments`,
`changed_fraction`, `n_clusters`, `parent_n_clusters`. With `zipf` (default) the Zipf analysis
is re-run on the curated types (`nscnet zipf`, its own run, tagged on the curated run).
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nscnet.config import ConfigError, CurateConfig, DataError
from nscnet.report.export import ASSIGNMENTS, NOISE, _stems, write_exports

log = logging.getLogger(__name__)

NOISE_NAMES = frozenset({"noise", "skipped", "drop", ""})
_CLUSTER_NAME = re.compile(r"^cluster_(\d+)$")


# ------------------------------------------------------------------------------- parsing

def _int(text: str, option: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"{option}: {text.strip()!r} is not a cluster id") from None


def parse_merge(text: str) -> list[list[int]]:
    """'3,7;5,9' -> [[3, 7], [5, 9]]."""
    groups = []
    for part in filter(str.strip, text.split(";")):
        group = [_int(v, f"merge={text!r}") for v in part.split(",") if v.strip()]
        if len(group) < 2:
            raise ConfigError(f"merge={text!r}: each group needs two clusters or more, e.g. 3,7")
        groups.append(group)
    return groups


def parse_rename(text: str) -> dict[int, str]:
    """'3=trill,5=buzz' -> {3: 'trill', 5: 'buzz'}."""
    out = {}
    for part in filter(str.strip, text.split(",")):
        if "=" not in part:
            raise ConfigError(f"rename={text!r}: {part.strip()!r} is not cluster=name")
        key, name = part.split("=", 1)
        if not name.strip():
            raise ConfigError(f"rename={text!r}: cluster {key.strip()} gets an empty name")
        out[_int(key, f"rename={text!r}")] = name.strip()
    return out


def parse_ids(text: str, option: str) -> list[int]:
    return [_int(v, f"{option}={text!r}") for v in text.split(",") if v.strip()]


def read_names_csv(path: str | Path) -> dict[int, str]:
    """A `cluster,name` CSV -> {cluster: name}; DataError naming the file and the bad row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"names={str(path)!r}: no such file")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"cluster", "name"} <= set(table.columns):
        raise DataError(f"{path}: expected the columns cluster,name (got {', '.join(table.columns)})")
    out = {}
    for number, (cluster, name) in enumerate(zip(table["cluster"], table["name"]), start=2):
        try:
            out[int(cluster)] = name.strip()
        except ValueError:
            raise DataError(f"{path}: line {number}: cluster {cluster!r} is not an integer id") from None
    return out


# -------------------------------------------------------------------------------- editing

def default_names(labels: np.ndarray) -> dict[int, str]:
    from nscnet.report.export import cluster_names

    return {int(c): str(n) for c, n in zip(labels, cluster_names(labels))}


def apply_edits(labels: np.ndarray, names: dict[int, str], *, merges: list[list[int]] = (),
                renames: dict[int, str] | None = None, drops: list[int] = (),
                table_names: dict[int, str] | None = None) -> tuple[np.ndarray, dict[int, str]]:
    """(curated labels, cluster id -> name) after the edits (see the module docstring for the order)."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    names = dict(names)
    present = set(int(c) for c in np.unique(labels)) - {NOISE}

    def check(c: int, option: str) -> None:
        if c not in present:
            raise DataError(f"{option}: cluster {c} is not a cluster of the run (clusters: "
                            f"{', '.join(map(str, sorted(present)[:20]))}{' ...' if len(present) > 20 else ''})")

    if table_names:
        for c in table_names:
            check(c, "names")
        by_name: dict[str, list[int]] = {}
        for c, name in table_names.items():
            by_name.setdefault(name, []).append(c)
        for name, group in by_name.items():
            if name.lower() in NOISE_NAMES:
                labels[np.isin(labels, group)] = NOISE
                continue
            target = min(group)
            labels[np.isin(labels, group)] = target
            names[target] = name
    for group in merges:
        for c in group:
            check(c, "merge")
        labels[np.isin(labels, group)] = group[0]
    for c, name in (renames or {}).items():
        check(c, "rename")
        names[c] = name
    for c in drops:
        check(c, "drop")
        labels[labels == c] = NOISE
    names[NOISE] = "noise"
    return labels, {c: names.get(c, f"cluster_{c}") for c in set(int(v) for v in labels)}


def labels_from_tracks(folder: str | Path, table: pd.DataFrame, names: dict[int, str]) -> tuple[np.ndarray, dict[int, str], dict[str, int]]:
    """Read edited Audacity tracks back: (labels, id -> name, counts) for the segments of table
    (segment_id, recording, onset_s, offset_s, cluster), by largest time overlap."""
    from nscnet.audio.labels import read_audacity

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"audacity={str(folder)!r}: no such folder of label tracks")
    parent = table["cluster"].to_numpy(dtype=np.int64)
    labels = parent.copy()
    by_name = {name: c for c, name in names.items()}
    out_names = dict(names)
    next_id = int(parent.max()) + 1 if len(parent) else 0
    counts = {"tracks_read": 0, "recordings_without_track": 0, "segments_without_label": 0, "new_types": 0}
    stems = _stems(sorted(table["recording"].astype(str).unique()))
    for recording, rows in table.groupby(table["recording"].astype(str), sort=True):
        path = folder / f"{stems[recording]}.txt"
        if not path.is_file():
            counts["recordings_without_track"] += 1
            continue
        counts["tracks_read"] += 1
        lines = [line for line in read_audacity(path) if not line.problem]
        if not lines:
            labels[rows.index] = NOISE
            counts["segments_without_label"] += len(rows)
            continue
        on = np.array([line.onset_s for line in lines])
        off = np.array([line.offset_s for line in lines])
        seg_on = rows["onset_s"].to_numpy(dtype=float)[:, None]
        seg_off = rows["offset_s"].to_numpy(dtype=float)[:, None]
        overlap = np.minimum(seg_off, off[None, :]) - np.maximum(seg_on, on[None, :])
        best = overlap.argmax(axis=1)
        for index, j, amount in zip(rows.index, best, overlap[np.arange(len(rows)), best]):
            if amount <= 0:
                labels[index] = NOISE
                counts["segments_without_label"] += 1
                continue
            text = lines[j].label.strip()
            if text.lower() in NOISE_NAMES:
                labels[index] = NOISE
            elif text in by_name:
                labels[index] = by_name[text]
            elif _CLUSTER_NAME.match(text):
                labels[index] = int(_CLUSTER_NAME.match(text).group(1))
                out_names.setdefault(int(labels[index]), text)
            else:
                by_name[text] = next_id
                out_names[next_id] = text
                labels[index] = next_id
                next_id += 1
                counts["new_types"] += 1
    out_names[NOISE] = "noise"
    return labels, {c: out_names.get(c, f"cluster_{c}") for c in set(int(v) for v in labels)}, counts


def change_metrics(parent: np.ndarray, curated: np.ndarray) -> dict[str, float]:
    """How much a curation changed the assignment."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    changed = int((parent != curated).sum())
    return {"nmi_parent": float(normalized_mutual_info_score(parent, curated)),
            "ari_parent": float(adjusted_rand_score(parent, curated)), "changed_segments": changed,
            "changed_fraction": changed / max(len(parent), 1),
            "n_clusters": int(len(set(curated.tolist()) - {NOISE})),
            "parent_n_clusters": int(len(set(parent.tolist()) - {NOISE})),
            "noise_fraction": float((curated == NOISE).mean()) if len(curated) else 0.0}


# ---------------------------------------------------------------------------- entry point

def _all_segments(run: Any, data: str) -> pd.DataFrame | None:
    """The parent's dataset's segments (skipped ones included) when its folder is there."""
    from nscnet.images.dataset import read_dataset
    from nscnet.report.gather import _resolve

    value = data or run.data.params.get("data", "")
    found = _resolve(value) if value else None
    if found is None:
        return None
    try:
        return read_dataset(found).all_segments
    except DataError:
        return None


def run_curate(cfg: CurateConfig) -> dict[str, Any]:
    """The `curate` entry point: a new run with the curated exports; returns its metrics and run_id."""
    from nscnet.runs import tracking
    from nscnet.report import gather

    if not cfg.run_id:
        raise ConfigError("run_id='' : name the MLflow run id of the clustering run to curate (--run_id ...)")
    edits = bool(cfg.merge or cfg.rename or cfg.drop or cfg.names)
    if cfg.audacity and edits:
        raise ConfigError(f"audacity={cfg.audacity!r} reads the whole curation back from the tracks: give it alone, "
                          "without merge / rename / drop / names")
    if not (edits or cfg.audacity):
        raise ConfigError("nothing to curate: give --merge, --rename, --drop, --names or --audacity")
    merges, renames, drops = parse_merge(cfg.merge), parse_rename(cfg.rename), parse_ids(cfg.drop, "drop")
    table_names = read_names_csv(cfg.names) if cfg.names else None
    parent = tracking.get_run(cfg.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        local = gather._download(cfg.run_id, ASSIGNMENTS, tmp)
        if local is None:
            raise DataError(f"run {cfg.run_id} has no {ASSIGNMENTS} to curate")
        table = pd.read_csv(local, dtype={"segment_id": str, "recording": str, "name": str}, keep_default_na=False)
    before = table["cluster"].to_numpy(dtype=np.int64)
    names = gather.names_of(table)
    if cfg.audacity:
        labels, new_names, counts = labels_from_tracks(cfg.audacity, table, names)
    else:
        labels, new_names = apply_edits(before, names, merges=merges, renames=renames, drops=drops,
                                        table_names=table_names)
        counts = {}
    metrics = {**change_metrics(before, labels), **counts}
    tags = {"nscnet.parent_run": cfg.run_id, "nscnet.curated_from": cfg.run_id,
            "nscnet.parent_step": parent.data.tags.get("nscnet.step", "")}
    if tracking.active_run_id() is None and tracking.experiment_name(parent.info.experiment_id) == cfg.experiment:
        tags["mlflow.parentRunId"] = cfg.run_id
    segment_names = np.array([new_names[int(c)] for c in labels], dtype=object)
    segments = table[["segment_id", "recording", "onset_s", "offset_s"]]
    out = Path(cfg.out)
    with tracking.start_run(cfg, "curate", tags=tags) as run:
        tracking.log_params({"parent_step": tags["nscnet.parent_step"]})  # data: the parent's (nscnet.parent_run)
        write_exports(out, segments, labels, all_segments=_all_segments(parent, cfg.data), names=segment_names)
        tracking.log_artifact(out / ASSIGNMENTS)
        tracking.log_artifacts(out / "audacity", "audacity")
        tracking.log_artifacts(out / "raven", "raven")
        sizes_before = pd.Series(before).value_counts().sort_index()
        sizes_after = pd.Series(labels).value_counts().sort_index()
        tracking.log_dict({"parent_run": cfg.run_id, "merge": merges, "rename": renames, "drop": drops,
                           "names_csv": cfg.names, "audacity": cfg.audacity, "counts": counts,
                           "names": {str(c): n for c, n in sorted(new_names.items())},
                           "sizes_before": {str(k): int(v) for k, v in sizes_before.items()},
                           "sizes_after": {str(k): int(v) for k, v in sizes_after.items()}}, "curation.json")
        tracking.log_metrics(metrics)
        if cfg.units:
            from nscnet.report import media
            from nscnet.images.dataset import read_dataset

            dataset = read_dataset(gather._dataset_path([parent], cfg.data))
            audio_dir, note = gather._audio_dir(dataset, cfg.audio)
            unit_table = segments.assign(cluster=labels)
            metrics.update(media.write_units(out / "units", unit_table, new_names, audio_dir))
            tracking.log_metrics({k: v for k, v in metrics.items() if k.startswith("units_")})
    tracking.tag_run(cfg.run_id, {"nscnet.curated_run": run.info.run_id})
    print(f"curate: {metrics['parent_n_clusters']} -> {metrics['n_clusters']} clusters, {metrics['changed_segments']} "
          f"segments changed (NMI with the parent {metrics['nmi_parent']:.3f}); exports in {out}; "
          f"run {run.info.run_id}")
    result = {**metrics, "run_id": run.info.run_id, "out": str(out)}
    if cfg.zipf:
        if metrics["n_clusters"] >= 3:
            from nscnet.analysis.zipf import run_zipf
            from nscnet.config import ZipfConfig

            zipf = run_zipf(ZipfConfig(run_id=run.info.run_id, bootstrap=cfg.bootstrap, experiment=cfg.experiment))
            result["zipf_run"], result["zipf_s"] = zipf["run_id"], zipf["zipf_s"]
        else:
            log.warning("zipf: %d curated clusters, fewer than 3: no Zipf fit", metrics["n_clusters"])
    result["run_id"] = run.info.run_id
    return result
