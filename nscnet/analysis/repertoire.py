"""Repertoire size: how many song types a bird has, including the ones not yet heard.

From the cluster sizes (songs per type, noise excluded) of one clustering:
- observed richness S_obs;
- Chao1, bias-corrected (Chao 1987, Biometrics 43:783-791; bias-corrected form as in
  Chao 2005 and EstimateS, Colwell 2013), with its analytic variance and log-normal interval;
- ACE, the abundance-based coverage estimator (Chao & Lee 1992, JASA 87:210-217; rare
  cut-off 10), with a bootstrap standard error (Chao et al. 2014's bootstrap assemblage) and
  a log-normal interval;
- an accumulation curve: distinct types heard against songs heard, averaged over random orders.

All pure functions of count arrays; formulas written out in docs/analysis.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.stats

RARE_CUTOFF = 10  # ACE: types with at most this many songs are "rare" (Chao & Lee 1992)


@dataclass(frozen=True)
class Estimate:
    """A richness estimate with its standard error and confidence interval (NaN when undefined)."""

    value: float
    stderr: float
    low: float
    high: float


def _counts(sizes: np.ndarray) -> np.ndarray:
    sizes = np.asarray(sizes, dtype=np.int64)
    return sizes[sizes > 0]


def frequency_counts(sizes: np.ndarray) -> tuple[int, int, int, int]:
    """(n songs, S_obs types, F1 singletons, F2 doubletons) of cluster sizes (N,)."""
    x = _counts(sizes)
    return int(x.sum()), len(x), int((x == 1).sum()), int((x == 2).sum())


def log_normal_interval(s_obs: float, estimate: float, variance: float, conf: float = 0.95) -> tuple[float, float]:
    """Chao's (1987) log-normal interval: T = estimate - S_obs is taken as log-normal, so the
    interval never falls below S_obs: (S_obs + T / K, S_obs + T * K), K = exp(z sqrt(ln(1 + var / T^2)))."""
    t = estimate - s_obs
    z = scipy.stats.norm.ppf(0.5 + conf / 2)
    if t <= 0 or not np.isfinite(variance):
        return float("nan"), float("nan")
    k = math.exp(z * math.sqrt(math.log(1.0 + variance / t**2)))
    return s_obs + t / k, s_obs + t * k


def chao1(sizes: np.ndarray, conf: float = 0.95) -> Estimate:
    """Bias-corrected Chao1: S_obs + (n-1)/n * F1 (F1 - 1) / (2 (F2 + 1)).

    Variance as in EstimateS for the bias-corrected form; log-normal interval. When nothing is
    estimated unseen (F1 <= 1) the interval is the one EstimateS and SpadeR use for that case,
    from P = sum_i exp(-x_i) / S_obs (the chance each seen type could have been missed).

    >>> chao1([1, 1, 1, 2, 2, 3, 5]).value  # 7 + 14/15 * 3*2 / (2*3)
    7.933333333333334
    """
    x = _counts(sizes)
    n, s_obs, f1, f2 = frequency_counts(x)
    if n == 0:
        return Estimate(0.0, 0.0, 0.0, 0.0)
    a = (n - 1) / n
    value = s_obs + a * f1 * (f1 - 1) / (2 * (f2 + 1))
    z = scipy.stats.norm.ppf(0.5 + conf / 2)
    if value > s_obs:
        variance = (a * f1 * (f1 - 1) / (2 * (f2 + 1))
                    + a**2 * f1 * (2 * f1 - 1) ** 2 / (4 * (f2 + 1) ** 2)
                    + a**2 * f1**2 * f2 * (f1 - 1) ** 2 / (4 * (f2 + 1) ** 4))
        low, high = log_normal_interval(s_obs, value, variance, conf)
    else:
        variance = float((np.exp(-x) - np.exp(-2.0 * x)).sum() - (x * np.exp(-x)).sum() ** 2 / n)
        p_missed = float(np.exp(-x).sum() / s_obs)
        centre, half = s_obs / (1 - p_missed), z * math.sqrt(max(variance, 0.0)) / (1 - p_missed)
        low, high = max(s_obs, centre - half), centre + half
    return Estimate(float(value), math.sqrt(max(variance, 0.0)), float(low), float(high))


def ace_value(sizes: np.ndarray, cutoff: int = RARE_CUTOFF) -> float:
    """ACE point estimate (Chao & Lee 1992); NaN when every rare type is a singleton (C_rare = 0).

    S_ace = S_abund + S_rare / C_rare + F1 / C_rare * gamma^2, with C_rare = 1 - F1 / n_rare and
    gamma^2 = max(S_rare / C_rare * sum_j j (j-1) F_j / (n_rare (n_rare - 1)) - 1, 0), j <= cutoff.
    """
    x = _counts(sizes)
    rare = x[x <= cutoff]
    s_abund = int((x > cutoff).sum())
    if len(rare) == 0:
        return float(len(x))
    n_rare, f1 = int(rare.sum()), int((rare == 1).sum())
    coverage = 1.0 - f1 / n_rare
    if coverage <= 0:
        return float("nan")
    gamma2 = max(len(rare) / coverage * float((rare * (rare - 1)).sum()) / (n_rare * (n_rare - 1)) - 1.0, 0.0)
    return s_abund + len(rare) / coverage + f1 / coverage * gamma2


def bootstrap_assemblage(sizes: np.ndarray) -> np.ndarray:
    """Type probabilities of the assemblage the bootstrap draws from (Chao et al. 2014, iNEXT):
    the seen types with their relative sizes shrunk by the estimated coverage, plus
    ceil(Chao1 - S_obs) unseen types sharing the missing probability 1 - C equally."""
    x = _counts(sizes).astype(float)
    n, s_obs, f1, f2 = frequency_counts(x)
    if f2 > 0:
        coverage = 1 - f1 / n * ((n - 1) * f1 / ((n - 1) * f1 + 2 * f2))
    else:
        coverage = 1 - f1 / n * ((n - 1) * (f1 - 1) / ((n - 1) * (f1 - 1) + 2))
    unseen = math.ceil(chao1(x).value - s_obs)
    p = x / n
    if unseen == 0 or coverage >= 1:
        return p
    lam = (1 - coverage) / float((p * (1 - p) ** n).sum())
    seen = p * (1 - lam * (1 - p) ** n)
    return np.concatenate([seen, np.full(unseen, (1 - coverage) / unseen)])


def ace(sizes: np.ndarray, *, draws: int = 200, seed: int = 0, conf: float = 0.95) -> Estimate:
    """ACE with a bootstrap standard error (`draws` samples of n songs from `bootstrap_assemblage`,
    seeded) and a log-normal interval around it. All NaN when ACE is undefined."""
    x = _counts(sizes)
    value = ace_value(x)
    if not np.isfinite(value):
        return Estimate(float("nan"), float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    samples = rng.multinomial(int(x.sum()), bootstrap_assemblage(x), size=draws)
    values = np.array([ace_value(row) for row in samples])
    stderr = float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else float("nan")
    low, high = log_normal_interval(len(x), value, stderr**2, conf)
    if value <= len(x):  # nothing unseen estimated: the interval is the observed richness
        low = high = float(len(x))
    return Estimate(float(value), stderr, float(low), float(high))


@dataclass(frozen=True)
class Accumulation:
    """Distinct types heard after `songs` songs: mean and 95% band over random orders."""

    songs: np.ndarray  # (P,) numbers of songs heard, 1..n
    mean: np.ndarray  # (P,)
    low: np.ndarray  # (P,) 2.5th percentile over orders
    high: np.ndarray  # (P,) 97.5th percentile over orders


def accumulation_curve(clusters: np.ndarray, *, orders: int = 100, points: int = 200, seed: int = 0) -> Accumulation:
    """Species-accumulation curve of a sequence of song types (noise -1 left out).

    `clusters`: (n_songs,) type of every song. For each of `orders` seeded random orders, the
    number of distinct types among the first m songs, at up to `points` values of m in 1..n.
    """
    labels = np.asarray(clusters)
    labels = labels[labels != -1]
    n = len(labels)
    if n == 0:
        empty = np.zeros(0)
        return Accumulation(empty.astype(int), empty, empty, empty)
    songs = np.unique(np.linspace(1, n, min(points, n)).round().astype(int))
    _, codes = np.unique(labels, return_inverse=True)
    rng = np.random.default_rng(seed)
    curves = np.empty((orders, len(songs)))
    for order in range(orders):
        shuffled = codes[rng.permutation(n)]
        _, first = np.unique(shuffled, return_index=True)  # where each type is first heard
        distinct = np.cumsum(np.bincount(first, minlength=n))
        curves[order] = distinct[songs - 1]
    return Accumulation(songs, curves.mean(axis=0), np.quantile(curves, 0.025, axis=0),
                        np.quantile(curves, 0.975, axis=0))


def repertoire_statistics(sizes: np.ndarray, *, seed: int = 0, draws: int = 200) -> dict[str, float]:
    """Observed types, Chao1 and ACE with intervals, as flat metric values (NaN = undefined)."""
    n, s_obs, f1, f2 = frequency_counts(sizes)
    c1, ac = chao1(sizes), ace(sizes, draws=draws, seed=seed)
    return {
        "repertoire_observed": float(s_obs), "repertoire_singletons": float(f1), "repertoire_doubletons": float(f2),
        "chao1": c1.value, "chao1_stderr": c1.stderr, "chao1_low": c1.low, "chao1_high": c1.high,
        "ace": ac.value, "ace_stderr": ac.stderr, "ace_low": ac.low, "ace_high": ac.high,
    }
