"""`nscnet auto`: a few candidate recipes run on the user's data, one chosen without labels.

The parent run (step `auto`) runs every candidate of `candidates` (`nscnet.presets.AUTO_CANDIDATES`;
"auto": `presets.auto_candidates`, the three pixel recipes and the deep `quality` preset)
as a nested MLflow run of its own step (BASENet, or NSCNet with a preset), with the same `k`,
`seed` and size-aware defaults, then picks the candidate with the best label-free `criterion`
(one of the metrics every clustering run logs; lower is better for davies_bouldin). The parent
logs the choice (`auto_choice` param, tags `nscnet.auto.choice`, `nscnet.auto.criterion`), each
candidate's criterion as metric `criterion_<candidate>` and the table `auto_candidates.json`
(run ids, criterion, nmi_truth when `truth`). The criterion and the candidates were chosen by
benchmarks/quality.py --sizes (docs/RESULTS.md, "Recipes across sizes").
"""

from __future__ import annotations

import logging
from typing import Any

from nscnet.clustering.selection import LOWER_IS_BETTER
from nscnet.config import AutoConfig, ConfigError
from nscnet.runs import console, tracking

log = logging.getLogger(__name__)
STEP = "auto"


def candidate_config(name: str, cfg: AutoConfig) -> tuple[str, Any]:
    """(step, config) of the candidate `name` with the parent's data, k, seed and truth."""
    from nscnet import presets

    if name not in presets.AUTO_CANDIDATES:
        raise ConfigError(f"candidates: {name!r} is not a candidate recipe (known: {', '.join(presets.AUTO_CANDIDATES)})")
    step, preset, values = presets.AUTO_CANDIDATES[name]
    given = dict(values, data=cfg.data, k=cfg.k, seed=cfg.seed, truth=cfg.truth, experiment=cfg.experiment,
                 run_name=f"auto candidate {name}", export=False)
    return step, presets.config(step, preset, **given)


def choose(scores: dict[str, float | None], criterion: str) -> str | None:
    """The candidate with the best criterion (None where no candidate has one)."""
    known = {name: value for name, value in scores.items() if value is not None}
    if not known:
        return None
    sign = -1 if criterion in LOWER_IS_BETTER else 1
    return max(known, key=lambda name: sign * known[name])


def run_auto(cfg: AutoConfig) -> dict[str, Any]:
    """The `auto` entry point: every candidate a nested run, the choice logged on the parent."""
    from nscnet import presets
    from nscnet.images.dataset import read_dataset
    from nscnet.steps import STEPS

    read_dataset(cfg.data)  # a folder that is not a dataset fails before any run
    names = presets.auto_candidates(cfg.candidates)
    if len(names) < 2:
        raise ConfigError(f"candidates={cfg.candidates!r}: give at least 2 candidate recipes to choose between")
    configs = {name: candidate_config(name, cfg) for name in names}  # unknown names fail before any run
    with tracking.start_run(cfg, STEP, tags={"nscnet.auto.criterion": cfg.criterion,
                                             "nscnet.auto.candidates": ",".join(names)}) as run:
        results: dict[str, dict[str, Any]] = {}
        for name, (step, child) in configs.items():
            results[name] = STEPS[step].load()(child)
        scores = {name: metrics.get(cfg.criterion) for name, metrics in results.items()}
        choice = choose(scores, cfg.criterion)
        if choice is None:
            raise ConfigError(f"criterion={cfg.criterion}: no candidate could compute it (too few clusters?)")
        table = {name: {"run_id": metrics["run_id"], cfg.criterion: scores[name],
                        "n_clusters": metrics.get("n_clusters"), "nmi_truth": metrics.get("nmi_truth")}
                 for name, metrics in results.items()}
        tracking.log_params({"auto_choice": choice})
        tracking.set_tags({"nscnet.auto.choice": choice, "nscnet.auto.choice_run": results[choice]["run_id"],
                           "mlflow.note.content": f"auto: {choice} chosen among {', '.join(names)} by "
                                                  f"{cfg.criterion} ({scores[choice]:.4f})"})
        tracking.log_metrics({f"criterion_{name}": value for name, value in scores.items() if value is not None})
        final = {key: value for key, value in results[choice].items() if isinstance(value, (int, float))
                 and not isinstance(value, bool) and value is not None}
        tracking.log_metrics(final)
        tracking.log_dict(table, "auto_candidates.json")
    console.say(f"auto: {choice} chosen by {cfg.criterion} "
                + ", ".join(f"{name}={value:.4f}" if value is not None else f"{name}=-" for name, value in scores.items()))
    return {**results[choice], "choice": choice, "candidates": table, "run_id": run.info.run_id}
