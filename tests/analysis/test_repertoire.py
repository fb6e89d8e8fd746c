"""Repertoire size: Chao1 and ACE against hand-computed values, and the accumulation curve."""

from __future__ import annotations

import numpy as np
import pytest

from nscnet.analysis import repertoire
from nscnet.analysis.zipf import zipf_pmf

# 7 types seen; n = 15 songs, F1 = 3 singletons, F2 = 2 doubletons
EXAMPLE = [1, 1, 1, 2, 2, 3, 5]


def test_chao1_without_singletons_is_the_observed_richness():
    sizes = [2, 2, 3, 5, 8, 40]
    estimate = repertoire.chao1(sizes)
    assert estimate.value == 6
    assert estimate.low == 6 and estimate.high >= 6


def test_chao1_hand_computed_example():
    estimate = repertoire.chao1(EXAMPLE)
    a = 14 / 15  # (n - 1) / n
    # S_obs + a F1 (F1 - 1) / (2 (F2 + 1)) = 7 + a * 3 * 2 / 6
    assert estimate.value == pytest.approx(7 + a)
    # EstimateS variance of the bias-corrected form: a*6/6 + a^2*3*25/(4*9) + a^2*9*2*4/(4*81)
    variance = a + a**2 * 75 / 36 + a**2 * 72 / 324
    assert estimate.stderr == pytest.approx(np.sqrt(variance))
    # log-normal interval: T = a, K = exp(1.96 sqrt(ln(1 + var / T^2)))
    k = np.exp(1.959964 * np.sqrt(np.log(1 + variance / a**2)))
    assert estimate.low == pytest.approx(7 + a / k, rel=1e-5)
    assert estimate.high == pytest.approx(7 + a * k, rel=1e-5)


def test_ace_hand_computed_example():
    # all 7 types rare (<= 10): n_rare = 15, C = 1 - 3/15 = 0.8, sum j(j-1)F_j = 2+2+6+20 = 30,
    # gamma^2 = 7/0.8 * 30 / (15 * 14) - 1 = 0.25, ACE = 7/0.8 + 3/0.8 * 0.25 = 9.6875
    assert repertoire.ace_value(EXAMPLE) == pytest.approx(9.6875)
    estimate = repertoire.ace(EXAMPLE, draws=200, seed=0)
    assert estimate.value == pytest.approx(9.6875)
    assert 7 <= estimate.low < estimate.value < estimate.high and estimate.stderr > 0
    assert repertoire.ace_value([50, 40, 30, 20]) == 4  # no rare types: nothing unseen
    assert np.isnan(repertoire.ace_value([1, 1, 1, 30]))  # every rare type a singleton: undefined


def test_estimates_move_toward_the_true_repertoire():
    rng = np.random.default_rng(0)
    songs = rng.choice(200, size=600, p=zipf_pmf(1.0, 200))  # 200 types, many unheard in 600 songs
    sizes = np.bincount(songs)
    stats = repertoire.repertoire_statistics(sizes, seed=0)
    observed = stats["repertoire_observed"]
    assert observed < 200
    for name in ("chao1", "ace"):
        assert observed < stats[name] and abs(stats[name] - 200) < abs(observed - 200)
        assert stats[f"{name}_low"] <= stats[name] <= stats[f"{name}_high"]


def test_accumulation_curve_rises_from_one_to_the_observed_types():
    rng = np.random.default_rng(1)
    songs = rng.choice(30, size=500, p=zipf_pmf(1.0, 30))
    songs[:20] = -1  # noise is not a type
    curve = repertoire.accumulation_curve(songs, orders=50, points=100, seed=0)
    assert curve.songs[0] == 1 and curve.songs[-1] == 480
    assert curve.mean[0] == 1 and curve.mean[-1] == len(np.unique(songs[songs >= 0]))
    assert np.all(np.diff(curve.mean) >= 0)
    assert np.all(curve.low <= curve.high) and curve.low[0] == curve.high[0] == 1 and curve.low[-1] == 30
    again = repertoire.accumulation_curve(songs, orders=50, points=100, seed=0)
    assert np.array_equal(curve.mean, again.mean)  # seeded
