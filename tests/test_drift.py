"""Tests for profile_enrichment.ml.drift: the PSI formula, binning edge cases, feature_drift."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from profile_enrichment.errors import UserError
from profile_enrichment.ml.drift import (
    DRIFT_COLUMNS,
    categorical_psi,
    feature_drift,
    population_stability_index,
    quantile_cuts,
)


def test_hand_computed_value():
    # Cuts from expected at quantiles 0 and 0.5: [1, 2.5] -> bins [1, 2.5) and [2.5, 4].
    # expected shares 0.5 / 0.5, actual 0.75 / 0.25 (outer and missing bins empty on both sides).
    # PSI = (0.75 - 0.5) ln(0.75 / 0.5) + (0.25 - 0.5) ln(0.25 / 0.5)
    expected_psi = 0.25 * math.log(1.5) + (-0.25) * math.log(0.5)
    assert list(quantile_cuts([1, 2, 3, 4], bins=2)) == [1.0, 2.5]
    psi = population_stability_index([1, 2, 3, 4], [1, 1, 1, 4], bins=2)
    assert psi == pytest.approx(expected_psi, abs=1e-12)
    assert psi == pytest.approx(0.2746530721670274)


def test_identical_and_same_distribution_are_near_zero():
    rng = np.random.default_rng(0)
    x = rng.lognormal(3.0, 1.0, 5000)
    assert population_stability_index(x, x) == 0.0
    y = rng.lognormal(3.0, 1.0, 5000)  # a fresh sample from the same distribution
    assert population_stability_index(x, y) < 0.02


def test_shifted_distribution_is_drift():
    rng = np.random.default_rng(1)
    train = rng.normal(0.0, 1.0, 5000)
    assert population_stability_index(train, rng.normal(0.5, 1.0, 5000)) > 0.2
    assert population_stability_index(train, rng.normal(1.0, 1.0, 5000)) > 0.5


def test_empty_bin_uses_epsilon_not_infinity():
    # Everything in actual lands above the training maximum: finite, large.
    psi = population_stability_index([1, 2, 3, 4], [10, 11, 12], bins=2)
    eps = 1e-4
    expected = 2 * (eps - 0.5) * math.log(eps / 0.5) + (1 - eps) * math.log(1 / eps)
    assert psi == pytest.approx(expected)


def test_ties_and_constant_features():
    # 60% zeros: the duplicate quantiles collapse into one bin instead of many empty ones.
    zeros = np.r_[np.zeros(600), np.arange(1, 401)]
    cuts = quantile_cuts(zeros, bins=10)
    assert cuts[0] == 0.0
    assert len(cuts) == len(set(cuts)) < 10
    assert population_stability_index(zeros, zeros) == 0.0
    # A constant training feature: same constant is stable, a moved constant is drift,
    # in either direction.
    const = np.full(100, 5.0)
    assert population_stability_index(const, np.full(50, 5.0)) == 0.0
    assert population_stability_index(const, np.full(50, 7.0)) > 1.0
    assert population_stability_index(const, np.full(50, 3.0)) > 1.0


def test_nan_is_its_own_bin():
    rng = np.random.default_rng(2)
    train = rng.normal(size=2000)
    with_missing = train.copy()
    with_missing[:600] = np.nan  # 30% missing, the rest unchanged in distribution
    assert population_stability_index(train, with_missing) > 0.2
    # Same missing share on both sides: no drift.
    assert population_stability_index(with_missing, with_missing) == 0.0
    # pandas NA / None and +-inf count as missing too.
    ser = pd.Series([1.0, 2.0, None, 4.0], dtype="Float64")
    assert population_stability_index(ser, [1.0, 2.0, np.inf, 4.0]) == 0.0
    # All-missing training values: only "present" vs "missing" is compared.
    assert population_stability_index([np.nan] * 4, [np.nan] * 4) == 0.0
    assert population_stability_index([np.nan] * 4, [1.0, 2.0]) > 1.0


def test_empty_side_gives_nan_and_bad_bins_raise():
    assert math.isnan(population_stability_index([], [1.0]))
    assert math.isnan(population_stability_index([1.0], []))
    with pytest.raises(ValueError, match="bins"):
        population_stability_index([1.0], [1.0], bins=0)


def test_categorical_psi_counts_unseen_and_missing():
    train = pd.Series(["web", "web", "app", "app"])
    assert categorical_psi(train, pd.Series(["app", "web"])) == 0.0
    shifted = categorical_psi(train, pd.Series(["web", "web", "web", "app"]))
    assert shifted == pytest.approx(0.25 * math.log(1.5) - 0.25 * math.log(0.5))
    assert categorical_psi(train, pd.Series(["store", None, "web", "app"])) > 1.0


def test_feature_drift_frame():
    rng = np.random.default_rng(3)
    n = 3000
    train = pd.DataFrame(
        {
            "revenue_90d": rng.gamma(2.0, 50.0, n),
            "sessions_30d": rng.poisson(4, n),
            "is_subscriber": rng.random(n) < 0.3,
            "channel": rng.choice(["web", "app"], n),
        }
    )
    score = pd.DataFrame(
        {
            "revenue_90d": rng.gamma(2.0, 50.0, n) * 1.8,  # drifted
            "sessions_30d": rng.poisson(4, n),
            "is_subscriber": rng.random(n) < 0.3,
            "channel": rng.choice(["web", "app"], n),
        }
    )
    out = feature_drift(train, score, ["sessions_30d", "revenue_90d", "is_subscriber", "channel"])
    assert tuple(out.columns) == DRIFT_COLUMNS
    assert out["feature"].tolist() == ["channel", "is_subscriber", "revenue_90d", "sessions_30d"]
    by = out.set_index("feature")
    assert bool(by.loc["revenue_90d", "is_drifted"]) is True
    assert by.loc["revenue_90d", "psi"] > 0.2
    assert not by.drop(index="revenue_90d")["is_drifted"].any()
    assert by.loc["revenue_90d", "score_mean"] > by.loc["revenue_90d", "train_mean"]
    assert math.isnan(by.loc["channel", "train_mean"])
    assert by.loc["is_subscriber", "train_mean"] == pytest.approx(0.3, abs=0.05)
    assert (out["n_train"] == n).all() and (out["n_score"] == n).all()
    assert out["is_drifted"].dtype == bool


def test_feature_drift_empty_score_frame_and_missing_columns():
    train = pd.DataFrame({"a": [1.0, 2.0, 3.0]})
    out = feature_drift(train, train.head(0), ["a"])
    assert math.isnan(out.loc[0, "psi"])
    assert not out.loc[0, "is_drifted"]
    assert out.loc[0, "n_score"] == 0
    with pytest.raises(UserError, match="missing from the scoring frame: b"):
        feature_drift(train.assign(b=1.0), train, ["a", "b"])
