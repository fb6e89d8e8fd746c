"""Zipf's law on cluster sizes: fit, goodness of fit, heavy-tail comparisons, and `run_zipf`.

A clustering puts `n` songs into `N` non-empty types. Sorted by size, the type of rank `k`
(1 = most used) holds `f_k` songs. The finite Zipf model over the `N` observed types is

    p_k(s) = k^-s / H(N, s),    H(N, s) = sum_{j=1..N} j^-s                 (paper eq. 10)

and its log-likelihood (eq. 11) is ``L(s) = -s * sum_k f_k ln k - n ln H(N, s)``. Setting
dL/ds = 0 (eq. 12) shows the maximum-likelihood s is the one whose mean log-rank equals the
observed one, ``sum_k p_k(s) ln k = sum_k f_k ln k / n``: the sufficient statistic is the mean
log-rank, which makes the bootstrap refits cheap and vectorised. See docs/analysis.md.

Pure functions take arrays and return numbers; `run_zipf(cfg)` reads the assignments of a
clustering run, calls them and logs everything to MLflow through `nscnet.runs.tracking`.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.optimize
import scipy.special
import scipy.stats

from nscnet.config import ConfigError, DataError, ZipfConfig

log = logging.getLogger(__name__)

S_MAX = 50.0  # steeper than this, every song but a handful is in the first type
MIN_CLUSTERS = 3  # with fewer non-empty types there is no shape to fit (1 free parameter + 1 dof)
MIN_EXPECTED = 5.0  # chi-squared: adjacent ranks are merged until every expected count reaches this


# ------------------------------------------------------------------------------ the model

def rank_sizes(clusters: Any) -> np.ndarray:
    """Cluster sizes in rank order (largest first), noise (-1) and empty clusters left out.

    `clusters`: (n_songs,) cluster ids, one per song. Returns (N,) int counts, N non-empty types.

    >>> rank_sizes([2, 2, 0, -1, 2, 0, 5]).tolist()
    [3, 2, 1]
    """
    labels = np.asarray(clusters)
    labels = labels[labels != -1]
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, counts = np.unique(labels, return_counts=True)
    return np.sort(counts)[::-1].astype(np.int64)


def zipf_pmf(s: float, n_types: int) -> np.ndarray:
    """(n_types,) probabilities k^-s / H(n_types, s) of ranks k = 1..n_types (eq. 10)."""
    log_rank = np.log(np.arange(1, n_types + 1))
    weights = np.exp(-s * log_rank)
    return weights / weights.sum()


def _mean_log_rank(s: np.ndarray, log_rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E_s[ln k] and Var_s[ln k] under finite Zipf, for each s of a (B,) array."""
    logits = -np.outer(s, log_rank)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    mean = p @ log_rank
    var = p @ log_rank**2 - mean**2
    return mean, var


def _check_sizes(sizes: np.ndarray) -> np.ndarray:
    sizes = np.asarray(sizes, dtype=np.int64)
    n_types = int((sizes > 0).sum())
    if n_types < MIN_CLUSTERS:
        shown = ", ".join(map(str, sizes[:10]))
        raise DataError(f"a Zipf fit needs at least {MIN_CLUSTERS} non-empty clusters (noise excluded); "
                        f"got {n_types} (sizes: {shown or 'none'}): no Zipf statistics are computed")
    return sizes


def fit_zipf_s(sizes: np.ndarray) -> float:
    """Maximum-likelihood exponent s of a finite Zipf over the N = len(sizes) ranks.

    `sizes`: (N,) counts in rank order (`rank_sizes`). Minimises the negative log-likelihood
    (eq. 11) with `scipy.optimize.minimize_scalar` over [0, S_MAX]; rank-ordered data always
    give s >= 0 (sorting can only lower the mean log-rank below the uniform one).
    """
    sizes = _check_sizes(sizes)
    n = sizes.sum()
    log_rank = np.log(np.arange(1, len(sizes) + 1))
    t = float(sizes @ log_rank)

    def negative_log_likelihood(s: float) -> float:
        return s * t + n * scipy.special.logsumexp(-s * log_rank)

    result = scipy.optimize.minimize_scalar(negative_log_likelihood, bounds=(0.0, S_MAX),
                                            method="bounded", options={"xatol": 1e-10})
    return float(result.x)


def fit_zipf_s_many(counts: np.ndarray) -> np.ndarray:
    """Vectorised MLE of s for each row of `counts` (B, N) (the bootstrap refits).

    Solves the score equation E_s[ln k] = mean observed log-rank for all rows at once:
    a start read off a grid, then `scipy.optimize.newton` on the (B,) array.
    """
    counts = np.asarray(counts, dtype=float)
    log_rank = np.log(np.arange(1, counts.shape[1] + 1))
    target = counts @ log_rank / counts.sum(axis=1)
    grid = np.concatenate([np.linspace(0.0, 5.0, 501), np.linspace(5.05, S_MAX, 450)])
    grid_mean, _ = _mean_log_rank(grid, log_rank)  # decreasing in s
    start = np.interp(-target, -grid_mean, grid)

    def score_prime(s: np.ndarray) -> np.ndarray:
        return -_mean_log_rank(s, log_rank)[1]

    # rows whose start sits on a bound (s = 0: equal sizes; s = S_MAX) need no refinement
    inside = (start > 0.0) & (start < S_MAX)
    s = start.copy()
    if inside.any():
        sub_target = target[inside]

        def score(x: np.ndarray) -> np.ndarray:
            return _mean_log_rank(x, log_rank)[0] - sub_target

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            refined = scipy.optimize.newton(score, start[inside], fprime=score_prime,
                                            tol=1e-10, maxiter=50, disp=False)
        s[inside] = np.clip(refined, 0.0, S_MAX)
    return s


def expected_counts(s: float, n_types: int, n_songs: int) -> np.ndarray:
    """(n_types,) expected songs per rank, n_songs * p_k(s)."""
    return n_songs * zipf_pmf(s, n_types)


def zipf_stderr(s: float, n_types: int, n_songs: int) -> float:
    """Asymptotic standard error of the MLE, 1 / sqrt(n * Var_s[ln k]) (Fisher information)."""
    _, var = _mean_log_rank(np.array([s]), np.log(np.arange(1, n_types + 1)))
    return float(1.0 / np.sqrt(n_songs * var[0]))


# ------------------------------------------------------------------------- goodness of fit

def ks_distance(counts: np.ndarray, pmf: np.ndarray) -> np.ndarray:
    """Largest gap between observed and model CDFs over ranks.

    `counts`: (N,) or (B, N) rank-ordered counts; `pmf`: (N,) or (B, N). Returns () or (B,).
    """
    counts = np.asarray(counts, dtype=float)
    observed = np.cumsum(counts, axis=-1) / counts.sum(axis=-1, keepdims=True)
    return np.abs(observed - np.cumsum(pmf, axis=-1)).max(axis=-1)


@dataclass(frozen=True)
class Bootstrap:
    """Goodness-of-fit statistics of the data and their parametric-bootstrap distributions."""

    ks: float  # KS distance of the data to its fit
    ks_pvalue: float
    chi2: float  # chi-squared statistic of the data in the merged bins
    chi2_pvalue: float  # the same statistic's bootstrap p-value (NaN with fewer than 3 bins)
    s_draws: np.ndarray  # (B,) MLE of s in each simulated sample
    ks_draws: np.ndarray  # (B,) KS distance of each simulated sample to its own fit
    chi2_draws: np.ndarray  # (B,) chi-squared statistic of each simulated sample to its own fit


def _refit_observed_types(simulated: np.ndarray, log_rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Refit rank-ordered samples (B, N) exactly as the data: over each sample's non-empty types.

    Returns (B,) exponents and (B, N) fitted pmfs, zero beyond each sample's last non-empty rank.
    """
    observed_types = (simulated > 0).sum(axis=1)
    s_fit = np.zeros(len(simulated))
    fitted = np.zeros(simulated.shape)
    for m in np.unique(observed_types):  # few distinct values: each group is one vectorised fit
        rows = np.flatnonzero(observed_types == m)
        s_fit[rows] = fit_zipf_s_many(simulated[rows, :m]) if m > 1 else S_MAX
        logits = -np.outer(s_fit[rows], log_rank[:m])
        fitted[rows, :m] = np.exp(logits - scipy.special.logsumexp(logits, axis=1, keepdims=True))
    return s_fit, fitted


def _pvalue(draws: np.ndarray, observed: float) -> float:
    """(1 + #{draw >= observed}) / (B + 1): never 0, exact-size for a continuous statistic."""
    return (1 + int((draws >= observed - 1e-12 * max(1.0, abs(observed))).sum())) / (len(draws) + 1)


def bootstrap_gof(sizes: np.ndarray, s: float, *, draws: int, seed: int, batch: int = 500) -> Bootstrap:
    """KS distance (and chi-squared) of `sizes` to Zipf(s), with parametric-bootstrap p-values.

    Each of `draws` samples has n = sizes.sum() songs drawn from the fitted Zipf(s) over
    N = len(sizes) types, is re-sorted into rank order exactly like the real data, its empty
    types are dropped as `rank_sizes` drops them, it is refitted (its own MLE s over its own
    non-empty types) and measured against its own fit; the p-value is the share of samples at
    least as far from their fit as the data, (1 + #{D_b >= D}) / (draws + 1). Seeded: the same
    inputs give the same p-values. The chi-squared statistic uses the data's merged bins.
    """
    sizes = _check_sizes(sizes)
    n_types, n = len(sizes), int(sizes.sum())
    pmf = zipf_pmf(s, n_types)
    ks = float(ks_distance(sizes, pmf))
    chi2, _, starts = chi2_test(sizes, s)
    rng = np.random.default_rng(seed)
    log_rank = np.log(np.arange(1, n_types + 1))
    s_parts, ks_parts, chi2_parts = [], [], []
    for start in range(0, draws, batch):  # batches bound memory at batch x N
        simulated = rng.multinomial(n, pmf, size=min(batch, draws - start))
        simulated = -np.sort(-simulated, axis=1)  # rank order, as for the real data
        s_fit, fitted = _refit_observed_types(simulated, log_rank)
        s_parts.append(s_fit)
        ks_parts.append(ks_distance(simulated, fitted))
        chi2_parts.append(_chi2_statistics(simulated.astype(float), fitted, starts))
    ks_draws, chi2_draws = np.concatenate(ks_parts), np.concatenate(chi2_parts)
    chi2_pvalue = _pvalue(chi2_draws, chi2) if np.isfinite(chi2) else float("nan")
    return Bootstrap(ks, _pvalue(ks_draws, ks), chi2, chi2_pvalue,
                     np.concatenate(s_parts), ks_draws, chi2_draws)


def merge_bins(expected: np.ndarray, minimum: float = MIN_EXPECTED) -> np.ndarray:
    """Start indices of bins of adjacent ranks, merged until every bin expects >= `minimum`.

    `expected`: (N,) expected counts in rank order. Bins are closed greedily from rank 1; a
    short tail that never reaches `minimum` joins the last bin. Use with `np.add.reduceat`.
    """
    starts, acc = [0], 0.0
    for index, e in enumerate(expected):
        acc += e
        if acc >= minimum and index + 1 < len(expected):
            starts.append(index + 1)
            acc = 0.0
    if acc < minimum and len(starts) > 1:  # the tail is short: fold it into the bin before
        starts.pop()
    return np.array(starts)


def chi2_test(sizes: np.ndarray, s: float) -> tuple[float, float, np.ndarray]:
    """Chi-squared goodness of fit of rank counts to Zipf(s), bins merged so none expects < 5.

    One degree of freedom is taken for the fitted s (`scipy.stats.chisquare(ddof=1)`).
    Returns (statistic, pvalue, bin starts); NaNs when fewer than 3 bins remain.
    """
    sizes = _check_sizes(sizes)
    expected = expected_counts(s, len(sizes), int(sizes.sum()))
    starts = merge_bins(expected)
    if len(starts) < 3:
        return float("nan"), float("nan"), starts
    result = scipy.stats.chisquare(np.add.reduceat(sizes.astype(float), starts),
                                   np.add.reduceat(expected, starts), ddof=1)
    return float(result.statistic), float(result.pvalue), starts


def _chi2_statistics(counts: np.ndarray, pmf: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(B,) chi-squared statistics of rank counts (B, N) against their own pmfs (B, N) in fixed bins."""
    n = counts.sum(axis=1, keepdims=True)
    observed = np.add.reduceat(counts, starts, axis=1)
    expected = np.add.reduceat(pmf * n, starts, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # a bin past a sample's last type expects 0
        terms = np.where(expected > 0, (observed - expected) ** 2 / expected, 0.0)
    return terms.sum(axis=1)


def paper_ks2_pvalue(sizes: np.ndarray, s: float) -> float:
    """The paper's test: two-sample KS between the observed and fitted probability vectors.

    It compares the two sets of N probability values as if they were samples, ignoring their
    ranks and the number of songs; it has little power (see docs/analysis.md). Kept only for
    comparison with the paper, logged as `zipf_ks2_paper_pvalue`.
    """
    sizes = _check_sizes(sizes)
    return float(scipy.stats.ks_2samp(sizes / sizes.sum(), zipf_pmf(s, len(sizes))).pvalue)


def powerlaw_comparisons(sizes: np.ndarray, *, xmin: str = "all") -> dict[str, float]:
    """Discrete power-law fit of the cluster sizes (`powerlaw` package) and likelihood ratios.

    The sizes themselves are the sample (their frequency distribution, exponent alpha; a Zipf
    rank law with exponent s implies alpha = 1 + 1/s). `xmin="all"` fits every cluster
    (xmin = the smallest size), `"auto"` lets powerlaw choose xmin by KS minimisation.
    R > 0 favours the power law; p is the significance of the sign of R (Vuong's test).
    Returns {} when powerlaw cannot fit (too few distinct sizes).
    """
    import powerlaw

    sizes = np.asarray(sizes, dtype=float)
    sizes = sizes[sizes > 0]
    if len(np.unique(sizes)) < 3:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = powerlaw.Fit(sizes, discrete=True, xmin=float(sizes.min()) if xmin == "all" else None,
                               verbose=False)
            out = {"powerlaw_alpha": fit.power_law.alpha, "powerlaw_sigma": fit.power_law.sigma,
                   "powerlaw_xmin": fit.xmin, "powerlaw_ks": fit.power_law.D}
            for other in ("lognormal", "exponential"):
                ratio, p = fit.distribution_compare("power_law", other, normalized_ratio=True)
                out[f"powerlaw_vs_{other}_R"] = ratio
                out[f"powerlaw_vs_{other}_p"] = p
        except Exception as exc:  # powerlaw raises assorted errors on degenerate samples
            log.warning("powerlaw fit failed (%s); its metrics are not logged", exc)
            return {}
    return {k: float(v) for k, v in out.items()}


def zipf_statistics(sizes: np.ndarray, *, bootstrap: int, seed: int, powerlaw_xmin: str = "all"
                    ) -> tuple[dict[str, float], Bootstrap]:
    """Every Zipf statistic of rank-ordered `sizes` (N,), as a flat dict of metric values.

    NaN values (a test that cannot be computed) are left out by `tracking.log_metrics`.
    """
    sizes = _check_sizes(sizes)
    n_types, n = len(sizes), int(sizes.sum())
    s = fit_zipf_s(sizes)
    boot = bootstrap_gof(sizes, s, draws=bootstrap, seed=seed)
    _, chi2_p, starts = chi2_test(sizes, s)
    metrics = {
        "zipf_s": s,
        "zipf_s_stderr": zipf_stderr(s, n_types, n),
        "zipf_s_boot_low": float(np.quantile(boot.s_draws, 0.025)),
        "zipf_s_boot_high": float(np.quantile(boot.s_draws, 0.975)),
        "zipf_ks": boot.ks,
        "zipf_ks_pvalue": boot.ks_pvalue,
        "zipf_chi2": boot.chi2,
        "zipf_chi2_pvalue": chi2_p,
        "zipf_chi2_boot_pvalue": boot.chi2_pvalue,
        "zipf_chi2_bins": float(len(starts)),
        "zipf_ks2_paper_pvalue": paper_ks2_pvalue(sizes, s),
        "n_clusters": float(n_types),
        "n_songs": float(n),
    }
    metrics.update(powerlaw_comparisons(sizes, xmin=powerlaw_xmin))
    return metrics, boot


# ---------------------------------------------------------------------------- entry point

def read_assignments(path: str | Path) -> np.ndarray:
    """The `cluster` column of an assignments CSV as an int array (n_songs,); DataError when unusable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"assignments file {path} does not exist")
    try:
        table = pd.read_csv(path)
    except Exception as exc:
        raise DataError(f"cannot read assignments {path}: {exc}") from None
    if "cluster" not in table.columns:
        raise DataError(f"assignments {path} has no 'cluster' column (columns: {', '.join(map(str, table.columns))})")
    clusters = pd.to_numeric(table["cluster"], errors="coerce")
    if clusters.isna().any() or (clusters % 1 != 0).any():
        bad = table.loc[clusters.isna() | (clusters % 1 != 0), "cluster"].iloc[0]
        raise DataError(f"assignments {path}: cluster {bad!r} is not an integer id")
    return clusters.to_numpy(dtype=np.int64)


def _load(cfg: ZipfConfig, tmp: str) -> tuple[np.ndarray, str]:
    """Cluster ids of the songs, and where they came from."""
    if not cfg.run_id and not cfg.assignments:
        raise ConfigError("zipf needs run_id (a clustering run) or assignments (an assignments.csv)")
    if cfg.run_id:
        from nscnet.runs import tracking

        tracking.get_run(cfg.run_id)  # DataError naming the id when there is no such run
        local = tracking.download_artifact(cfg.run_id, "assignments.csv", tmp)
        return read_assignments(local), f"run {cfg.run_id}"
    return read_assignments(cfg.assignments), str(cfg.assignments)


def _parent_tags(run_id: str, experiment: str) -> dict[str, str]:
    """Link to the clustering run: always `nscnet.parent_run`; MLflow's own parent tag (the UI
    shows the run nested under it) when both runs are in the same experiment and no other run
    is active (a demo or study run would be the natural parent then)."""
    from nscnet.runs import tracking

    if not run_id:
        return {}
    tags = {"nscnet.parent_run": run_id}
    parent = tracking.get_run(run_id)
    if tracking.active_run_id() is None and tracking.experiment_name(parent.info.experiment_id) == experiment:
        tags["mlflow.parentRunId"] = run_id
    return tags


def run_zipf(cfg: ZipfConfig) -> dict[str, Any]:
    """Zipf and repertoire analysis of a clustering run (or an assignments CSV), as an MLflow run.

    Logs zipf_s, zipf_ks_pvalue, zipf_chi2_pvalue and the other statistics, the repertoire
    estimates, `zipf_ranks.csv` (rank, size, expected) and figures. Returns the metrics and `run_id`.
    """
    from nscnet.runs import tracking
    from nscnet.analysis import plots, repertoire

    with tempfile.TemporaryDirectory() as tmp:
        clusters, source = _load(cfg, tmp)
    sizes = rank_sizes(clusters)
    _check_sizes(sizes)  # before any run is opened: no run with made-up numbers
    log.info("%s: %d songs (%d noise) in %d clusters", source, len(clusters), int((clusters == -1).sum()), len(sizes))

    with tracking.start_run(cfg, "zipf", tags=_parent_tags(cfg.run_id, cfg.experiment)) as run:
        metrics, boot = zipf_statistics(sizes, bootstrap=cfg.bootstrap, seed=cfg.seed, powerlaw_xmin=cfg.powerlaw_xmin)
        metrics["noise_fraction"] = float((clusters == -1).mean())
        metrics.update(repertoire.repertoire_statistics(sizes, seed=cfg.seed))
        tracking.log_metrics(metrics)
        tracking.log_params({"zipf_source": source})

        s = metrics["zipf_s"]
        expected = expected_counts(s, len(sizes), int(sizes.sum()))
        ranks = pd.DataFrame({"rank": np.arange(1, len(sizes) + 1), "size": sizes, "expected": expected,
                              "probability": sizes / sizes.sum(), "zipf_probability": zipf_pmf(s, len(sizes))})
        with tempfile.TemporaryDirectory() as tmp:
            ranks.to_csv(Path(tmp) / "zipf_ranks.csv", index=False)
            tracking.log_artifact(Path(tmp) / "zipf_ranks.csv")
        tracking.log_dict({"method": {
            "zipf_s": "maximum likelihood, finite Zipf over the observed non-empty clusters (noise excluded)",
            "zipf_ks_pvalue": f"parametric bootstrap, {cfg.bootstrap} samples from the fitted law, each re-sorted "
                              f"into rank order and refitted (seed {cfg.seed})",
            "zipf_chi2_pvalue": "scipy.stats.chisquare, adjacent ranks merged until every expected count >= 5, ddof=1",
            "zipf_chi2_boot_pvalue": "the same chi-squared statistic against the parametric bootstrap",
            "zipf_ks2_paper_pvalue": "the paper's two-sample KS between probability vectors (weak; comparison only)",
        }, "metrics": metrics}, "zipf.json")
        tracking.log_figure(plots.zipf_figure(sizes, expected, s, log_axes=False), "zipf_linear")
        tracking.log_figure(plots.zipf_figure(sizes, expected, s, log_axes=True), "zipf_loglog")
        curve = repertoire.accumulation_curve(clusters, orders=cfg.orders, seed=cfg.seed)
        tracking.log_figure(plots.accumulation_figure(curve, {"Chao1": metrics["chao1"], "ACE": metrics["ace"]}),
                            "accumulation")
        if cfg.run_id:
            tracking.tag_run(cfg.run_id, {"nscnet.zipf_run": run.info.run_id})
    log.info("zipf_s %.3f (KS bootstrap p %.3g, chi-squared p %.3g); Chao1 %.1f, ACE %.1f",
             s, metrics["zipf_ks_pvalue"], metrics["zipf_chi2_pvalue"], metrics["chao1"], metrics["ace"])
    return {**metrics, "run_id": run.info.run_id}
