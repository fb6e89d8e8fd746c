"""`nscnet study <model>`: one worker of an Optuna study over a model's entry point.

The study lives in the Optuna storage (`--storage`: a journal file, default ./optuna.journal,
or a database URL such as postgresql://user:password@host/db); every worker process that
names the same storage and study joins it (`load_if_exists`). Each worker opens its own
MLflow parent run (tags `nscnet.study` = study name, `nscnet.worker` = host:pid) and every
trial it runs is a nested run under it, tagged `optuna.study_name` and `optuna.trial_number`.
When the worker ends, its parent run logs the study-wide summary (best value and params,
Optuna figures), so the last worker to finish holds the complete picture.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna

from nscnet import defaults, presets
from nscnet.config import Cluster, ConfigError, Evaluate, StudyConfig, Sweep, field_type, fields, replace, to_params
from nscnet.images.dataset import read_dataset
from nscnet.runs import console, tracking
from nscnet.runs.locks import exclusive
from nscnet.steps import STEPS
from nscnet.studies import space, storage as storages, worker

log = logging.getLogger(__name__)

# Fields that change only the clustering, never the features it clusters.
CLUSTER_ONLY = {f.name for group in (Cluster, Sweep, Evaluate) for f in fields(group)} - {"seed"}


def parse_overrides(text: str, config_cls: type, step: str = "") -> dict[str, Any]:
    """`"pca_dim=64,whiten=false"` -> {"pca_dim": 64, "whiten": False}, typed by the config fields;
    `preset=NAME` too when `step` has presets (`nscnet.presets`)."""
    from nscnet.cli import PARSERS

    names = {f.name for f in fields(config_cls)}
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.replace(";", ",").split(","))):
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if sep and name == "preset" and presets.names(step):
            values[name] = value.strip()
            continue
        if not sep or name not in names:
            raise ConfigError(f"overrides: {item!r} is not name=value with a field of {config_cls.__name__}")
        try:
            values[name] = PARSERS[field_type(config_cls, name)](value.strip())
        except Exception as exc:
            raise ConfigError(f"overrides: {item!r}: {exc}") from None
    return values


def model_config(cfg: StudyConfig) -> Any:
    """The model config every trial starts from: defaults, then the preset named in `overrides`
    (if any), then the other `overrides` and the study's own fields."""
    config_cls = STEPS[cfg.model].config
    values = parse_overrides(cfg.overrides, config_cls, cfg.model)
    preset = values.pop("preset", None)
    names = {f.name for f in fields(config_cls)}
    for name in ("data", "truth", "seed", "experiment"):
        if name in names:
            values[name] = getattr(cfg, name)
    return config_cls(**presets.resolve(cfg.model, preset, values))


class FeatureCache:
    """Features of one post-processing setting, computed once per study and reused across K.

    Keyed by a hash of the feature-relevant params and the dataset's fingerprint; kept in memory
    (a few settings) and on disk under `root`, so other workers of the study reuse them too.
    """

    def __init__(self, compute: Callable[[Any, Any], np.ndarray], data: str, root: Path, keep: int = 4,
                 feature_fields: tuple[str, ...] | None = None):
        self.compute, self.root, self.keep = compute, root, keep
        self.feature_fields = feature_fields  # the model's own list of what its features depend on, if any
        self.dataset = read_dataset(data)  # read once per worker: memmap, no copy
        images = Path(data) / "spectrograms.npy"
        stat = images.stat()
        self.fingerprint = self.dataset.meta.get("hash") or f"{images.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        self.memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = self.misses = 0

    def key(self, cfg: Any) -> str:
        params = to_params(cfg)
        if self.feature_fields is not None:
            relevant = {k: params[k] for k in self.feature_fields if k in params}
        else:
            relevant = {k: v for k, v in params.items() if k not in CLUSTER_ONLY and k not in ("experiment", "run_name")}
        relevant["dataset"] = self.fingerprint
        return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def __call__(self, cfg: Any) -> np.ndarray:
        key = self.key(cfg)
        if key in self.memory:
            self.hits += 1
            self.memory.move_to_end(key)
            return self.memory[key]
        path = self.root / f"{key}.npy"
        # a worker needing the features another one is computing waits for them, then reads them
        with exclusive(path, what="feature file", level=logging.INFO, bounded=False):
            if path.is_file():
                self.hits += 1
                features = np.load(path)
            else:
                self.misses += 1
                features = np.asarray(self.compute(cfg, self.dataset))
                partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(partial, features)
                os.replace(partial, path)  # atomic: a reader never sees half a file
        self.memory[key] = features
        while len(self.memory) > self.keep:
            self.memory.popitem(last=False)
        return features


def make_plan(cfg: StudyConfig, run_trial: Callable) -> worker.Plan:
    config_cls = STEPS[cfg.model].config
    only = tuple(name.strip() for name in cfg.params.split(",") if name.strip())
    dims = space.search_space(config_cls, k_min=cfg.k_min, k_max=cfg.k_max, only=only)
    if not dims:
        raise ConfigError(f"params={cfg.params!r}: nothing to search for {cfg.model}")
    k_name = next((d.name for d in dims if d.is_int_range), None)
    return worker.Plan(dims=dims, grid=space.grid(dims, seed=cfg.seed, k_name=k_name), objective=cfg.objective,
                       maximize=cfg.direction == "maximize", n_trials=cfg.n_trials,
                       refine_k=cfg.refine_k, k_name=k_name, run_trial=run_trial)


def _features_for(cfg: StudyConfig, base: Any, study_name: str) -> FeatureCache | None:
    """A feature cache when the model's step declares a `features` capability (BASENet), else None.

    The step may also declare `feature_fields`, the config fields its features depend on;
    otherwise every field but the clustering-only ones keys the cache.
    """
    capability = STEPS[cfg.model].load_features()
    if capability is None:
        return None
    compute, feature_fields = capability
    return FeatureCache(compute, base.data, storages.cache_root(cfg.storage, study_name), feature_fields=feature_fields)


def log_summary(study: optuna.Study, cfg: StudyConfig) -> dict[str, Any]:
    """Study-wide best value/params and the Optuna figures, into the active (parent) run."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    states = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    tracking.log_metrics({f"trials_{name}": count for name, count in states.items()})
    summary: dict[str, Any] = {"trials": states}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        summary.update(best_value=best.value, best_params=best.params, best_trial=best.number,
                       best_run_id=best.user_attrs.get("mlflow_run_id", ""))
        tracking.log_metrics({f"best_{cfg.objective}": best.value, "best_trial": best.number})
        tracking.log_params({f"best_{k}": v for k, v in best.params.items()})
        tracking.set_tags({"nscnet.best_run_id": summary["best_run_id"], "nscnet.best_trial": best.number,
                           "nscnet.best_run_url": best.user_attrs.get("mlflow_run_url", "")})
    tracking.log_dict(summary, "study_summary.json")
    figures = {"optimization_history": optuna.visualization.plot_optimization_history,
               "param_importances": optuna.visualization.plot_param_importances,
               "slice": optuna.visualization.plot_slice}
    for name, plot in figures.items():
        try:
            tracking.log_figure(plot(study), name, png=False)
        except Exception as exc:  # e.g. importances need 2+ trials whose params vary
            log.info("figure %s skipped: %s", name, str(exc).splitlines()[0][:200])
    return summary


def _init_tracking(experiment: str) -> None:
    """Create the tracking store and experiment once: workers starting together on a fresh
    SQLite store would otherwise race to create its tables."""
    uri = tracking.tracking_uri()
    if not uri.startswith("sqlite:///"):
        tracking.setup(experiment)
        return
    db = Path(uri[len("sqlite:///"):])
    with exclusive(db, what="tracking store", level=logging.DEBUG, bounded=False):
        tracking.setup(experiment)


def _limit_threads(threads: int) -> None:
    """Cap this worker's BLAS/OpenMP threads for good: several workers starting together each
    see the machine idle (the load average lags), so each would take every core."""
    from threadpoolctl import threadpool_limits

    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by nscnet.clustering.cluster.free_cores
    threadpool_limits(threads)


def run_study(cfg: StudyConfig) -> dict[str, Any]:
    """Join (or create) the study and run trials until it has `n_trials` complete trials."""
    step = STEPS[cfg.model]
    base = model_config(cfg)
    if cfg.threads > 0:
        _limit_threads(cfg.threads)
    _init_tracking(cfg.experiment)
    study_name = cfg.study_name or f"{cfg.model}-{Path(cfg.data).resolve().name}"
    storage_text = cfg.storage or storages.DEFAULT_JOURNAL
    shown = storages.mask_password(storage_text)
    storage = storages.open_storage(storage_text, heartbeat_s=cfg.heartbeat_s)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_name, storage=storage, direction=cfg.direction,
                                load_if_exists=True, sampler=optuna.samplers.RandomSampler(seed=cfg.seed))
    study.set_user_attr("objective", cfg.objective)
    study.set_metric_names([cfg.objective])  # the dashboard's name of the objective, not "Objective 0"
    n_segments = len(read_dataset(cfg.data))
    k_min, k_max, notice = defaults.k_grid_bounds(cfg.k_min, cfg.k_max, n_segments)
    auto_tags = {}
    if notice:  # the paper's grid (64..2048) on a smaller data set: cut, never a failing trial
        log.warning(notice)
        auto_tags[defaults.AUTO_TAG] = notice
        cfg = replace(cfg, k_min=k_min, k_max=k_max)
    features = _features_for(cfg, base, study_name)
    run_trial = worker.mlflow_trial_runner(step.load(), base, study_name=study_name, features=features)
    plan = make_plan(cfg, run_trial)
    log.info("study %s on %s: %d grid points, %d complete trials wanted", study_name, shown, len(plan.grid), cfg.n_trials)
    worker_name = f"{socket.gethostname()}:{os.getpid()}"
    masked = replace(cfg, storage=shown, study_name=study_name)
    started = time.perf_counter()
    png_before = os.environ.get(tracking.PNG_ENV)
    os.environ[tracking.PNG_ENV] = str(cfg.figure_png).lower()
    try:
        summary = _work_in_parent_run(cfg, study, plan, storage, features, masked, study_name, worker_name, started,
                                      auto_tags)
    finally:
        if png_before is None:
            os.environ.pop(tracking.PNG_ENV, None)
        else:
            os.environ[tracking.PNG_ENV] = png_before
    summary.update(study_name=study_name, storage=shown)
    if "best_value" in summary:
        log.info("best %s = %.4f with %s (trial %d)", cfg.objective, summary["best_value"],
                 summary["best_params"], summary["best_trial"])
    return summary


def _work_in_parent_run(cfg, study, plan, storage, features, masked, study_name, worker_name, started,
                        auto_tags=None) -> dict[str, Any]:
    with tracking.start_run(masked, "study", run_name=cfg.run_name or f"study {study_name} ({worker_name})",
                            tags={"nscnet.study": study_name, "nscnet.worker": worker_name,
                                  "optuna.study_name": study_name, **(auto_tags or {})}):
        tracking.log_params({"grid_points": len(plan.grid),
                             "search_space": ",".join(d.name for d in plan.dims)})
        with console.bar(total=cfg.n_trials, desc=f"study {study_name}", unit="trial") as progress:
            ran = worker.work(study, plan, storage, timeout_s=cfg.timeout, sampler_seed=cfg.seed,
                              progress=progress)
        elapsed = time.perf_counter() - started
        tracking.log_metrics({"worker_trials": ran, "worker_seconds": elapsed})
        if features is not None:
            tracking.log_metrics({"feature_cache_hits": features.hits, "feature_cache_misses": features.misses})
        summary = log_summary(study, cfg)
        if cfg.compare:
            from nscnet.ui.dashboards import log_comparison

            log_comparison(cfg.experiment)
    summary.update(worker_trials=ran, worker_seconds=elapsed)
    return summary
