"""Label-free model selection: clustering stability, and how well a criterion ranks runs.

Pure functions of arrays, no MLflow.

- `resample_stability(processed, params, runs)`: the clustering of `params` is fitted again on
  `runs` seeded resamples (80% of the points, without replacement, each with its own seed);
  the score is the mean NMI between each re-clustering and the full clustering on the points
  they share (1.0: the clustering does not depend on the seed or on which points it saw).
  `evaluate_and_log` logs it as `stability` when `params.stability_runs` > 0.
- `seed_stability(labelings)`: mean pairwise NMI of the final clusterings of one
  configuration trained under different seeds (`nscnet.clustering.cluster.stability`).
- `rank_correlations(rows, criteria, target)`: Spearman rank correlation of each label-free
  criterion with a truth metric over runs (benchmarks/quality.py prints it).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import normalized_mutual_info_score

from nscnet.clustering.cluster import fit_clusters, stability
from nscnet.config import ConfigError, replace

RESAMPLE_FRACTION = 0.8
# criteria where a smaller value is better: their sign is flipped before ranking
LOWER_IS_BETTER = frozenset({"davies_bouldin"})


def resample_stability(processed: np.ndarray, params: Any, runs: int, *, reference: np.ndarray | None = None,
                       fraction: float = RESAMPLE_FRACTION) -> float | None:
    """Mean NMI (0..1) of `runs` clusterings of seeded resamples with the full clustering.

    processed: (N, d) features exactly as clustered; params: a ClusterParams-like config
    (algorithm, k, seed, ...); reference: the full clustering's labels (N,) (fitted here when
    None). None when there are too few points to resample (fewer than 4, or fewer than 2k).
    """
    if runs < 1:
        raise ConfigError(f"stability_runs={runs} must be >= 1 to measure stability")
    if not 0 < fraction < 1:
        raise ConfigError(f"fraction={fraction} must be between 0 and 1")
    x = np.asarray(processed, dtype=np.float32)
    n = len(x)
    size = int(round(fraction * n))
    k = getattr(params, "k", 1) if params.algorithm == "kmeans" else 1
    if size < max(4, 2 * k, getattr(params, "min_samples", 1), getattr(params, "min_cluster_size", 1)):
        return None
    if reference is None:
        reference = fit_clusters(x, params).labels
    reference = np.asarray(reference)
    scores = []
    for run in range(1, runs + 1):
        seed = int(params.seed) + run
        pick = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
        labels = fit_clusters(x[pick], replace(params, seed=seed)).labels
        scores.append(normalized_mutual_info_score(reference[pick], labels))
    return float(np.mean(scores))


def seed_stability(labelings: Sequence[np.ndarray]) -> float:
    """Mean pairwise NMI of the final clusterings of one configuration under different seeds."""
    return stability(labelings)


def rank_correlations(rows: Sequence[Mapping[str, Any]], criteria: Sequence[str],
                      target: str = "nmi_truth") -> dict[str, float | None]:
    """Spearman correlation of each criterion with `target` over the rows that have both.

    Criteria in LOWER_IS_BETTER are negated first, so for every criterion +1 means "ranks the
    runs exactly as the truth does". None where fewer than 3 rows have both values or a column
    is constant.
    """
    out: dict[str, float | None] = {}
    for name in criteria:
        pairs = [(r[name], r[target]) for r in rows if r.get(name) is not None and r.get(target) is not None]
        if len(pairs) < 3:
            out[name] = None
            continue
        values, truth = np.array(pairs, dtype=float).T
        if name in LOWER_IS_BETTER:
            values = -values
        if np.ptp(values) == 0 or np.ptp(truth) == 0:
            out[name] = None
            continue
        out[name] = float(spearmanr(values, truth).statistic)
    return out


def best_criterion(correlations: Mapping[str, float | None]) -> str | None:
    """The criterion with the highest rank correlation (None when none could be computed)."""
    known = {k: v for k, v in correlations.items() if v is not None and np.isfinite(v)}
    return max(known, key=known.get) if known else None
