"""What the MLflow UI says about a run: its name and its description. Pure functions, no MLflow.

- `default_name(cfg, step)`: a short name that says what ran and sorts well in the runs list,
  e.g. `basenet pca64 kmeans k=8`, `basenet umap10 hdbscan mcs=3`, `nscnet small_cnn quality k=8`,
  `vaenet z64 kmeans k=8`, `preprocess recordings mel 64x512`; a study trial is named by the
  study (`study demo-basenet #012 k=8 pca128 l2`, `trial_name`). The `run_name` option of every
  step (`nscnet.config.StepConfig`) wins over it.
- `note(...)`: the run's description (the `mlflow.note.content` tag, Markdown), written when
  the run ends: the data and N, the headline metrics, the defaults resolved from the data,
  warnings, and links to the run's figures, exports, report and model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Mapping

HEADLINE = ("silhouette", "nmi_truth", "ari_truth", "n_clusters", "noise_fraction", "stability", "selected_k",
            "selected_min_samples", "epochs_trained", "zipf_s", "zipf_ks_pvalue", "entropy_mean", "segments_ok",
            "nmi_prev", "train_loss", "worker_trials")
RANDOM_NAME = re.compile(r"^[a-z]+-[a-z]+-\d+$")  # MLflow's generated names, e.g. respected-shoat-528


def _range(values: tuple[int, ...]) -> str:
    return f"{min(values)}..{max(values)}" if len(values) > 1 else str(values[0])


def _reducer(cfg: Any, reducer: str | None = None) -> str:
    reducer = reducer or getattr(cfg, "reducer", "pca")
    if reducer == "umap":
        return f"umap{cfg.umap_dim}"
    pca = getattr(cfg, "pca_dim", 0)
    return f"pca{pca}" if pca > 0 else ("pcaauto" if pca < 0 else "nopca")  # < 0: not resolved yet


def _clustering(cfg: Any, algorithm: str | None = None) -> str:
    algorithm = algorithm or cfg.algorithm
    if algorithm == "kmeans":
        values = getattr(cfg, "k_values", ())
        return f"kmeans k={_range(values) if values else cfg.k or 'auto'}"
    sweep = getattr(cfg, "min_samples_values", ())
    if sweep:
        return f"{algorithm} ms={_range(sweep)}"
    return f"{algorithm} mcs={cfg.min_cluster_size or 'auto'}"


def default_name(cfg: Any, step: str) -> str:
    """The run name of `step` for `cfg` (see the module docstring); the step's name for a
    config without the fields its name is made of."""
    try:
        return _name(cfg, step)
    except AttributeError:
        return step


def _name(cfg: Any, step: str) -> str:
    if step == "basenet":
        source = "" if getattr(cfg, "features", "pixels") == "pixels" else f"{cfg.features} "
        return f"basenet {source}{_reducer(cfg)} {_clustering(cfg)}"
    if step == "vaenet":
        return f"vaenet z{cfg.latent_dim} {_clustering(cfg)}"
    if step == "nscnet":
        from nscnet.presets import matching

        preset = matching("nscnet", cfg)  # a preset's name says its final clustering too
        name = f"nscnet {cfg.backbone} {preset or f'{cfg.epochs}ep'} k={cfg.k or 'auto'}"
        if not preset and (cfg.final_reducer, cfg.final_algorithm) != ("pca", "kmeans"):
            name += f" final {cfg.final_reducer}+{cfg.final_algorithm}"
        return name
    if step == "pretrain":
        return f"pretrain {cfg.backbone} {cfg.epochs}ep {_reducer(cfg)} {_clustering(cfg)}"
    if step == "preprocess":
        return f"preprocess {Path(cfg.audio).name} {cfg.encoding} {cfg.n_mels}x{cfg.frames}"
    if step == "synth":
        return f"synth {cfg.types} types {cfg.songs} songs"
    if step == "zipf":
        return f"zipf {cfg.run_id[:8] if cfg.run_id else Path(cfg.assignments).name}"
    if step == "entropy":
        return f"entropy {Path(cfg.audio).name}"
    if step == "predict":
        return f"predict {Path(cfg.data).name} with {cfg.run_id[:8]}"
    if step == "study":
        return f"study {cfg.study_name or cfg.model}"
    if step == "auto":
        return f"auto {'candidates' if cfg.candidates == 'auto' else cfg.candidates.replace(',', ' ')} by {cfg.criterion}"
    return step


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def trial_name(study_name: str, number: int, params: Mapping[str, Any]) -> str:
    """`study demo-basenet #012 k=8 pca128 whiten l2`: the searched values, K first; true
    booleans by name, false ones left out; the trial number zero-padded so names sort."""
    parts = [f"study {study_name} #{number:03d}"]
    for name in sorted(params, key=lambda n: (n != "k", n)):
        value = params[name]
        if isinstance(value, bool):
            if value:
                parts.append(name)
        elif name == "pca_dim":
            parts.append(f"pca{value}")
        else:
            parts.append(f"{name}={_short(value)}")
    return " ".join(parts)


def _number(value: Any) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return f"{int(value)}" if isinstance(value, float) else str(value)


def note(*, name: str, step: str, params: Mapping[str, str], metrics: Mapping[str, float],
         tags: Mapping[str, str], artifacts: Iterable[str], run_link: str) -> str:
    """The Markdown description of a finished run.

    artifacts: paths relative to the run's artifact root (top level and `figures/...`);
    run_link: the run page's address, relative (`#/experiments/1/runs/<id>`) or absolute; the
    artifact links are built on it.
    """
    lines = [f"**{name}** ({step})"]
    data = params.get("data") or params.get("audio") or params.get("assignments") or params.get("run_id")
    if data:
        size = params.get("n_segments")
        shape = params.get("image_shape")
        extra = ", ".join(filter(None, [f"N = {size} segments" if size else "", f"{shape} images" if shape else ""]))
        lines.append(f"Data: `{data}`" + (f" ({extra})" if extra else ""))
    shown = [m for m in HEADLINE if m in metrics] + sorted(m for m in metrics if m.startswith("best_"))
    if shown:
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {m} | {_number(metrics[m])} |" for m in shown[:10]]
    if tags.get("nscnet.auto"):
        lines += ["", f"Defaults resolved from the data: {tags['nscnet.auto']}"]
    warnings = [v for k, v in sorted(tags.items()) if k.startswith("nscnet.warning")]
    for text in warnings:
        lines += ["", f"**Warning:** {text}"]
    if tags.get("nscnet.best_run_url"):
        lines += ["", f"Best trial: [{tags.get('nscnet.best_trial', 'run')}]({tags['nscnet.best_run_url']})"]
    artifacts = sorted(set(artifacts))
    link = run_link.rstrip("/") + "/artifacts/"

    def links(paths: list[str]) -> str:
        return ", ".join(f"[{p}]({link}{p})" for p in paths)

    figures = [p for p in artifacts if p.startswith("figures/") and p.endswith(".html")]
    groups = (("Figures", figures),
              ("Exports", [p for p in artifacts if p in ("assignments.csv", "audacity", "raven", "embeddings.npy",
                                                         "entropy.csv", "zipf.json", "labels")]),
              ("Report", [p for p in artifacts if p.startswith("report")]),
              ("Model", [p for p in artifacts if p in ("model", "model_state", "pretrained", "predict")]),
              ("Dashboards", [p for p in artifacts if p.startswith("dashboards")]))
    for title, paths in groups:
        if paths:
            lines += ["", f"{title}: {links(paths)}"]
    return "\n".join(lines) + "\n"
