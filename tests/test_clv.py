"""Tests for the BG/NBD + Gamma-Gamma CLV models (profile_enrichment.ml.clv).

Published references:
- Fader, Hardie & Lee (2005), "Counting your customers the easy way" (BG/NBD on the CDNOW sample
  of 2357 customers, 39-week calibration, weeks): r=0.243, alpha=4.414, a=0.793, b=2.426,
  LL=-9582.4; Hardie's BG/NBD spreadsheet: E[X(t)] and E[Y(39) | x=2, t_x=30.43, T=38.86]=1.226.
- Fader, Hardie & Lee (2005b) / Fader & Hardie note 025 "The Gamma-Gamma model of monetary
  value": p=6.25, q=3.74, gamma=15.44 on the 946 CDNOW repeat customers.

The CDNOW files come from the ``lifetimes`` wheel (a test-only dependency). It is located through
importlib.metadata and never imported: lifetimes itself does not support pandas 3.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special

from profile_enrichment.errors import ModelFitError
from profile_enrichment.ml import clv
from profile_enrichment.ml.clv import (
    BetaGeoModel,
    GammaGammaModel,
    bg_nbd_log_likelihood,
    compress_rfm,
    customer_lifetime_value,
    gamma_gamma_log_likelihood,
    summarize_transactions,
)

# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------

CDNOW_CALIBRATION_END = "1997-09-30"  # end of week 39, counted from 1997-01-01


def _lifetimes_dataset(name: str) -> Path:
    try:
        dist = importlib.metadata.distribution("lifetimes")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(
            "CDNOW data need the test-only 'lifetimes' distribution (pip install lifetimes)"
        )
    path = Path(str(dist.locate_file(f"lifetimes/datasets/{name}")))
    if not path.exists():
        pytest.fail(f"lifetimes is installed but {path} is missing")
    return path


@pytest.fixture(scope="module")
def cdnow_summary() -> pd.DataFrame:
    """Hardie's CDNOW calibration summary: ID, x, t_x, T (weeks, 2 decimals), zbar (cents)."""
    return pd.read_csv(_lifetimes_dataset("cdnow_customers_summary_with_transactions.csv"))


@pytest.fixture(scope="module")
def cdnow_raw_summary() -> pd.DataFrame:
    """The same summary recomputed from the raw CDNOW sample transactions (exact values)."""
    raw = pd.read_csv(
        _lifetimes_dataset("CDNOW_sample.txt"),
        sep=r"\s+",
        header=None,
        names=["master_id", "customer_id", "date", "n_cds", "amount"],
    )
    raw["date"] = pd.to_datetime(raw["date"].astype(str), format="%Y%m%d")
    return summarize_transactions(
        raw["customer_id"], raw["date"], raw["amount"], CDNOW_CALIBRATION_END, time_unit_days=7.0
    )


@pytest.fixture(scope="module")
def cdnow_bg(cdnow_summary: pd.DataFrame) -> BetaGeoModel:
    return BetaGeoModel(time_unit="weeks").fit(
        cdnow_summary["x"], cdnow_summary["t_x"], cdnow_summary["T"]
    )


TRUE_PARAMS = {"r": 0.5, "alpha": 20.0, "a": 0.8, "b": 4.0, "p": 6.0, "q": 4.0, "v": 15.0}


def simulate_bgnbd_gg(
    n: int,
    r: float,
    alpha: float,
    a: float,
    b: float,
    p: float,
    q: float,
    v: float,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw (x, t_x, T, mean repeat spend) from the BG/NBD + Gamma-Gamma generative story.

    λ ~ Gamma(r, rate α), p ~ Beta(a, b); repeat purchases are Poisson(λ) on (0, T]; the customer
    drops out right after the N-th repeat purchase, N ~ Geometric(p). Given K Poisson events on
    (0, T], the x-th event time is T * Beta(x, K - x + 1). Spend: ν ~ Gamma(q, rate v) and the mean
    of x Gamma(p, rate ν) amounts is Gamma(p x, rate x ν). Continuous time (days), so the model is
    exactly right.
    """
    rng = np.random.default_rng(seed)
    T = rng.integers(30, 731, n).astype(float)
    lam = rng.gamma(r, 1.0 / alpha, n)
    drop = rng.beta(a, b, n)
    k = rng.poisson(lam * T)
    x = np.minimum(k, rng.geometric(drop))
    t_x = np.zeros(n)
    rep = x > 0
    t_x[rep] = T[rep] * rng.beta(x[rep], k[rep] - x[rep] + 1)
    nu = rng.gamma(q, 1.0 / v, n)
    m = np.zeros(n)
    m[rep] = rng.gamma(p * x[rep], 1.0 / (x[rep] * nu[rep]))
    return x.astype(float), t_x, T, m


@pytest.fixture(scope="module")
def simulated() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return simulate_bgnbd_gg(50_000, **TRUE_PARAMS, seed=0)


@pytest.fixture(scope="module")
def small_sim() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return simulate_bgnbd_gg(3_000, **TRUE_PARAMS, seed=1)


@pytest.fixture(scope="module")
def fitted_small(small_sim) -> tuple[BetaGeoModel, GammaGammaModel]:
    x, t_x, T, m = small_sim
    return BetaGeoModel().fit(x, t_x, T), GammaGammaModel().fit(x, m)


def _bg_params(model: BetaGeoModel) -> list[float]:
    return [model.r_, model.alpha_, model.a_, model.b_]


def _within_published_precision(value: float, published: float, decimals: int) -> bool:
    """True when ``value`` rounds to ``published`` at the paper's number of decimals."""
    return abs(value - published) <= 0.5 * 10.0**-decimals * (1 + 1e-9)


# --------------------------------------------------------------------------------------------
# 1. CDNOW: published results
# --------------------------------------------------------------------------------------------


def test_summarize_transactions_reproduces_hardie_cdnow_summary(
    cdnow_summary: pd.DataFrame, cdnow_raw_summary: pd.DataFrame
) -> None:
    ours = cdnow_raw_summary
    hardie = cdnow_summary.set_index("ID").loc[ours.index]
    assert len(ours) == 2357
    # x counts distinct purchase DAYS (80 customers differ if one counts transactions).
    np.testing.assert_array_equal(ours["frequency"].to_numpy(), hardie["x"].to_numpy())
    # Hardie's file rounds weeks and dollars to 2 decimals.
    np.testing.assert_allclose(ours["recency"], hardie["t_x"], atol=0.005 + 1e-9)
    np.testing.assert_allclose(ours["T"], hardie["T"], atol=0.005 + 1e-9)
    np.testing.assert_allclose(ours["monetary_value"], hardie["zbar"], atol=0.005 + 1e-9)


def test_bgnbd_matches_fader_hardie_lee_2005_on_cdnow(cdnow_bg: BetaGeoModel) -> None:
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    got = cdnow_bg.params_dict()
    for name, value in published.items():
        # Published to 3 decimals: the MLE must round to them (|diff| <= 5e-4).
        assert _within_published_precision(got[name], value, 3), (name, got[name], value)
    assert round(cdnow_bg.log_likelihood_, 1) == -9582.4
    assert cdnow_bg.n_customers_ == 2357
    assert cdnow_bg.converged_
    assert got["time_unit"] == "weeks"


def test_bgnbd_cdnow_from_raw_transactions_matches_published(
    cdnow_raw_summary: pd.DataFrame,
) -> None:
    s = cdnow_raw_summary
    got = BetaGeoModel().fit(s["frequency"], s["recency"], s["T"]).params_dict()
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert _within_published_precision(got[name], value, 3), (name, got[name], value)


def test_bgnbd_cdnow_predictions_match_hardie_spreadsheet(cdnow_bg: BetaGeoModel) -> None:
    # Unconditional E[X(t)], eq. (7), as tabulated in Hardie's BG/NBD spreadsheet.
    times = np.array([0.1429, 1.0, 3.0, 31.8571, 32.0, 78.0])
    expected = np.array([0.0078, 0.0532, 0.1506, 1.0405, 1.0437, 1.8576])
    np.testing.assert_allclose(cdnow_bg.expected_purchases_new(times), expected, atol=5e-4)
    # Conditional expectation, eq. (10), for customer 1 (x=2, t_x=30.43, T=38.86), 39 weeks.
    assert float(cdnow_bg.expected_purchases(39, 2, 30.43, 38.86)) == pytest.approx(1.226, abs=5e-4)
    # P(alive): the closed form of Hardie's note 021, written out naively here.
    r, alpha, a, b = cdnow_bg.r_, cdnow_bg.alpha_, cdnow_bg.a_, cdnow_bg.b_
    naive = 1.0 / (1.0 + a / (b + 2 - 1) * ((alpha + 38.86) / (alpha + 30.43)) ** (r + 2))
    assert float(cdnow_bg.probability_alive(2, 30.43, 38.86)) == pytest.approx(naive, rel=1e-12)
    assert naive == pytest.approx(0.7266, abs=1e-4)


def test_gamma_gamma_matches_published_on_cdnow(cdnow_raw_summary: pd.DataFrame) -> None:
    s = cdnow_raw_summary
    gg = GammaGammaModel().fit(s["frequency"], s["monetary_value"])
    assert gg.n_customers_ == 946
    assert gg.n_excluded_nonpositive_ == 0
    got = gg.params_dict()
    for name, value in {"p": 6.25, "q": 3.74, "v": 15.44}.items():
        assert _within_published_precision(got[name], value, 2), (name, got[name], value)
    # Customer 1 (x=2, zbar=22.35): 24.6586 in the lifetimes documentation for the same model.
    assert float(gg.conditional_expected_average_profit(2, 22.35)) == pytest.approx(
        24.6586, rel=1e-3
    )


def test_gamma_gamma_on_rounded_cdnow_file_is_close(cdnow_summary: pd.DataFrame) -> None:
    # zbar rounded to cents moves the MLE slightly (gamma 15.448 rather than 15.444).
    gg = GammaGammaModel().fit(cdnow_summary["x"], cdnow_summary["zbar"])
    for name, value in {"p": 6.25, "q": 3.74, "v": 15.44}.items():
        assert gg.params_dict()[name] == pytest.approx(value, rel=2e-3)


# --------------------------------------------------------------------------------------------
# 2. Parameter recovery on simulated data
# --------------------------------------------------------------------------------------------


def test_parameter_recovery_on_50k_simulated_customers(simulated) -> None:
    x, t_x, T, m = simulated
    bg = BetaGeoModel().fit(x, t_x, T)
    gg = GammaGammaModel().fit(x, m)
    estimates = {**bg.params_dict(), **gg.params_dict()}
    errors = {**bg.standard_errors_, **gg.standard_errors_}
    for name, true in TRUE_PARAMS.items():
        est = estimates[name]
        assert est == pytest.approx(true, rel=0.10), (name, est, true)
        # The standard errors are calibrated: the truth is within 4 of them.
        assert abs(est - true) < 4 * errors[name], (name, est, true, errors[name])
    assert bg.n_customers_ == 50_000
    assert gg.n_customers_ == int((x > 0).sum())


def test_fitted_params_maximize_the_public_log_likelihood(fitted_small, small_sim) -> None:
    x, t_x, T, m = small_sim
    bg, gg = fitted_small
    for fn, theta, data in [
        (bg_nbd_log_likelihood, [bg.r_, bg.alpha_, bg.a_, bg.b_], (x, t_x, T)),
        (gamma_gamma_log_likelihood, [gg.p_, gg.q_, gg.v_], (x[x > 0], m[x > 0])),
    ]:
        log_theta = np.log(theta)
        for i in range(len(theta)):
            step = np.zeros(len(theta))
            step[i] = 1e-5
            up = fn(np.exp(log_theta + step), *data)
            down = fn(np.exp(log_theta - step), *data)
            center = fn(theta, *data)
            # Zero slope, negative curvature along every log-parameter.
            assert abs(up - down) / 2e-5 < 1e-3 * len(x)
            assert up < center and down < center
    assert bg.log_likelihood_ == pytest.approx(bg_nbd_log_likelihood(_bg_params(bg), x, t_x, T))


# --------------------------------------------------------------------------------------------
# 3. Numerical stability and weights
# --------------------------------------------------------------------------------------------


def test_log_likelihood_finite_for_huge_counts() -> None:
    params = (0.243, 4.414, 0.793, 2.426)
    x = np.array([500.0, 5000.0, 0.0, 1.0])
    t_x = np.array([4999.0, 49_000.0, 0.0, 1e-9])
    T = np.array([5000.0, 50_000.0, 1e6, 5000.0])
    ll = bg_nbd_log_likelihood(params, x, t_x, T)
    assert np.isfinite(ll)
    # The raw formula overflows here (Γ(r+x) and (α+T)^(r+x) are inf) ...
    r, alpha, a, b = params
    with np.errstate(all="ignore"):
        raw = special.gamma(r + x[0]) * alpha**r / (special.gamma(r) * (alpha + T[0]) ** (r + x[0]))
    assert not np.isfinite(raw) or raw == 0.0
    # ... and where it does not, the two agree.
    xs, txs, Ts = np.array([3.0]), np.array([20.0]), np.array([38.0])
    b1 = special.beta(a, b + xs) / special.beta(a, b)
    b2 = special.beta(a + 1, b + xs - 1) / special.beta(a, b)
    g = special.gamma(r + xs) * alpha**r / special.gamma(r)
    raw_small = g * (b1 / (alpha + Ts) ** (r + xs) + b2 / (alpha + txs) ** (r + xs))
    assert bg_nbd_log_likelihood(params, xs, txs, Ts) == pytest.approx(np.log(raw_small[0]))
    gg_ll = gamma_gamma_log_likelihood((6.25, 3.74, 15.44), [500.0, 1.0], [1e6, 1e-3])
    assert np.isfinite(gg_ll)


def _posterior_expected_purchases(
    r: float, alpha: float, a: float, b: float, t: float, x: float, t_x: float, T: float
) -> float:
    """E[Y(t) | x, t_x, T] by quadrature, independent of eq. (10)'s hypergeometric closed form.

    Given alive, λ | data ~ Gamma(r+x, α+T) and p | data ~ Beta(a, b+x), and a live customer
    makes (1 - e^{-λ p t}) / p purchases in expectation ([FHL05] eq. 8), so
    E = P(alive) ∫ Beta(p; a, b+x) (1 - (1 + p t/(α+T))^-(r+x)) / p dp.
    """
    s, tau = r + x, t / (alpha + T)

    def integrand(u: float) -> float:  # p = e^u, dp = p du: tames the p^(a-1) endpoint
        p = np.exp(u)
        log_beta_pdf = (a - 1) * u + special.xlog1py(b + x - 1, -p) - special.betaln(a, b + x)
        return float(np.exp(log_beta_pdf) * -np.expm1(-s * np.log1p(p * tau)))

    value = sum(
        integrate.quad(integrand, lo, hi, epsabs=0, epsrel=1e-12, limit=200)[0]
        for lo, hi in [(-80.0, -20.0), (-20.0, -5.0), (-5.0, -1.0), (-1.0, 0.0)]
    )
    if x == 0:
        return value
    log_odds = np.log(a / (b + x - 1)) + (r + x) * np.log((alpha + T) / (alpha + t_x))
    return value * special.expit(-log_odds)


@pytest.mark.parametrize(
    "params",
    [
        (0.243, 4.414, 0.793, 2.426),
        (0.5, 20.0, 0.8, 4.0),
        (2.0, 50.0, 1.5, 3.0),
        (0.3, 2.0, 3.0, 0.9),
    ],
)
def test_expected_purchases_matches_quadrature_including_large_counts(params) -> None:
    bg = BetaGeoModel()
    bg.r_, bg.alpha_, bg.a_, bg.b_ = params
    for t, x, t_x, T in [
        (39.0, 2.0, 30.43, 38.86),
        (365.0, 0.0, 0.0, 100.0),
        (30.0, 50.0, 700.0, 730.0),
        (3650.0, 500.0, 4990.0, 5000.0),
        (365.0, 200.0, 4000.0, 5000.0),
    ]:
        got = float(bg.expected_purchases(t, x, t_x, T))
        ref = _posterior_expected_purchases(*params, t, x, t_x, T)
        assert np.isfinite(got)
        assert got == pytest.approx(ref, rel=1e-6, abs=1e-300), (params, t, x, t_x, T)


def test_predictions_finite_for_huge_counts(cdnow_bg: BetaGeoModel) -> None:
    x = np.array([500.0, 2000.0, 0.0])
    t_x = np.array([4999.0, 4000.0, 0.0])
    T = np.array([5000.0, 5000.0, 5000.0])
    e = cdnow_bg.expected_purchases(52.0, x, t_x, T)
    pa = cdnow_bg.probability_alive(x, t_x, T)
    assert np.all(np.isfinite(e)) and np.all(np.isfinite(pa))
    assert e[0] > 1.0  # a very frequent, recent buyer keeps buying
    assert pa[1] < 1e-100  # 2000 purchases then 1000 weeks of silence: gone


def test_time_unit_only_rescales_alpha(small_sim) -> None:
    x, t_x, T, _ = small_sim
    days = BetaGeoModel().fit(x, t_x, T)
    hours = BetaGeoModel(time_unit="hours").fit(x, t_x * 24, T * 24)
    for name in ("r", "a", "b"):
        assert getattr(hours, f"{name}_") == pytest.approx(getattr(days, f"{name}_"), rel=1e-6)
    assert hours.alpha_ == pytest.approx(days.alpha_ * 24, rel=1e-6)
    assert hours.params_dict()["time_unit"] == "hours"


def test_compressed_weighted_fit_equals_expanded_fit(small_sim) -> None:
    x, t_x, T, m = small_sim
    # Round times to whole weeks so that rows repeat and compression really merges them.
    t_x, T = np.floor(t_x / 7), np.floor(T / 7)
    comp = compress_rfm(x, t_x, T)
    assert comp.weights.sum() == x.size
    assert comp.frequency.size < 0.8 * x.size
    np.testing.assert_array_equal(comp.frequency[comp.inverse], x)
    np.testing.assert_array_equal(comp.recency[comp.inverse], t_x)
    np.testing.assert_array_equal(comp.T[comp.inverse], T)
    params = (0.5, 3.0, 0.8, 4.0)
    assert bg_nbd_log_likelihood(params, comp.frequency, comp.recency, comp.T, comp.weights) == (
        pytest.approx(bg_nbd_log_likelihood(params, x, t_x, T), rel=1e-12)
    )
    expanded = BetaGeoModel().fit(x, t_x, T)
    weighted = BetaGeoModel().fit(comp.frequency, comp.recency, comp.T, weights=comp.weights)
    np.testing.assert_allclose(_bg_params(weighted), _bg_params(expanded), rtol=1e-6)
    assert weighted.log_likelihood_ == pytest.approx(expanded.log_likelihood_, rel=1e-9)
    assert weighted.n_customers_ == expanded.n_customers_ == x.size

    # Gamma-Gamma (which does not compress internally): integer-cent spend, weights vs rows.
    cents = np.round(m, 0)
    gg_comp = compress_rfm(x, np.zeros_like(x), np.zeros_like(x), cents)
    assert gg_comp.monetary_value is not None
    expanded_gg = GammaGammaModel().fit(x, cents)
    weighted_gg = GammaGammaModel().fit(
        gg_comp.frequency, gg_comp.monetary_value, weights=gg_comp.weights
    )
    assert gg_comp.frequency.size < x.size
    np.testing.assert_allclose(
        list(weighted_gg.params_dict().values()),
        list(expanded_gg.params_dict().values()),
        rtol=1e-6,
    )


def test_analytic_gradient_and_hessian_match_finite_differences(small_sim) -> None:
    x, t_x, T, m = small_sim
    grouped = clv._group_rows([x, t_x, T])
    counts = np.bincount(grouped.inverse).astype(float)
    rep = x > 0
    objectives = [
        (clv._BGNBDObjective(grouped, counts, 1.0 / T.max(), 0.1), np.log([0.7, 3.0, 0.6, 2.5])),
        (clv._GammaGammaObjective(x[rep], m[rep], np.ones(rep.sum()), 0.1), np.log([4, 3, 20])),
    ]
    for obj, at in objectives:
        eye = np.eye(at.size) * 1e-6
        fd_grad = [
            (obj.value_and_grad(at + e)[0] - obj.value_and_grad(at - e)[0]) / 2e-6 for e in eye
        ]
        fd_hess = [
            (obj.value_and_grad(at + e)[1] - obj.value_and_grad(at - e)[1]) / 2e-6 for e in eye
        ]
        np.testing.assert_allclose(obj.value_and_grad(at)[1], fd_grad, atol=1e-6)
        np.testing.assert_allclose(obj.hessian(at), np.array(fd_hess), atol=1e-6)


# --------------------------------------------------------------------------------------------
# 4. Properties, CLV, Gamma-Gamma exclusions, errors
# --------------------------------------------------------------------------------------------


def test_probability_alive_properties(cdnow_bg: BetaGeoModel) -> None:
    x = np.repeat(np.arange(0, 60, 3.0), 30)
    T = np.tile(np.linspace(1.0, 80.0, 30), 20)
    t_x = np.where(x > 0, T * 0.5, 0.0)
    pa = cdnow_bg.probability_alive(x, t_x, T)
    assert np.all((pa >= 0) & (pa <= 1))
    # BG/NBD: a customer without repeat purchases cannot have dropped out yet.
    np.testing.assert_array_equal(pa[x == 0], 1.0)
    # Longer silence since the last purchase lowers P(alive); more recent raises it.
    assert np.all(np.diff(cdnow_bg.probability_alive(5, 10.0, np.linspace(10, 100, 50))) < 0)
    assert np.all(np.diff(cdnow_bg.probability_alive(5, np.linspace(0.5, 40, 50), 40.0)) > 0)


def test_expected_purchases_properties(cdnow_bg: BetaGeoModel) -> None:
    t = np.linspace(0.0, 200.0, 41)[:, None]
    x = np.array([0.0, 1.0, 5.0, 20.0])
    t_x = np.array([0.0, 10.0, 30.0, 38.0])
    T = np.full(4, 38.86)
    e = cdnow_bg.expected_purchases(t, x, t_x, T)
    assert e.shape == (41, 4)
    np.testing.assert_array_equal(e[0], 0.0)
    assert np.all(e >= 0)
    assert np.all(np.diff(e, axis=0) > 0)
    new = cdnow_bg.expected_purchases_new(t[:, 0])
    assert new[0] == 0 and np.all(np.diff(new) > 0)
    np.testing.assert_allclose(
        cdnow_bg.expected_purchases(t, x, t_x, T),
        cdnow_bg.expected_purchases_if_alive(t, x, T) * cdnow_bg.probability_alive(x, t_x, T),
    )


def test_customer_lifetime_value_matches_monthly_loop(fitted_small, small_sim) -> None:
    bg, gg = fitted_small
    x, t_x, T, m = (a[:200] for a in small_sim)
    got = customer_lifetime_value(
        bg, gg, x, t_x, T, m, horizon_months=6, discount_rate_monthly=0.02
    )
    spend = gg.conditional_expected_average_profit(x, m)
    expected = np.zeros(x.size)
    for month in range(1, 7):
        purchases = bg.expected_purchases(30.0 * month, x, t_x, T) - bg.expected_purchases(
            30.0 * (month - 1), x, t_x, T
        )
        expected += purchases * spend / 1.02**month
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_customer_lifetime_value_properties(fitted_small, small_sim) -> None:
    bg, gg = fitted_small
    x, t_x, T, m = small_sim
    values = {
        h: customer_lifetime_value(bg, gg, x, t_x, T, m, horizon_months=h) for h in (0, 3, 12, 36)
    }
    np.testing.assert_array_equal(values[0], 0.0)
    assert np.all(values[3] >= 0)
    assert np.all(values[12] > values[3]) and np.all(values[36] > values[12])
    cheaper = customer_lifetime_value(bg, gg, x, t_x, T, m, discount_rate_monthly=0.05)
    assert np.all(cheaper < values[12])
    # The same horizon in weeks: T and t_x in weeks, 30/7 weeks a month.
    bg_weeks = BetaGeoModel(time_unit="weeks").fit(x, t_x / 7, T / 7)
    in_weeks = customer_lifetime_value(bg_weeks, gg, x, t_x / 7, T / 7, m, time_unit_days=7.0)
    np.testing.assert_allclose(in_weeks, values[12], rtol=1e-5)


def test_gamma_gamma_excludes_and_counts_nonpositive_spend(small_sim) -> None:
    x, _, _, m = small_sim
    m = m.copy()
    rep = np.flatnonzero(x > 0)
    m[rep[:7]] = 0.0
    m[rep[7:10]] = -12.5  # refunds larger than purchases
    gg = GammaGammaModel().fit(x, m)
    assert gg.n_excluded_nonpositive_ == 10
    keep = (x > 0) & (m > 0)
    clean = GammaGammaModel().fit(x[keep], m[keep])
    assert gg.n_customers_ == clean.n_customers_ == keep.sum()
    np.testing.assert_allclose(
        list(gg.params_dict().values()), list(clean.params_dict().values()), rtol=1e-9
    )
    # Frequency 0: the population mean p v / (q - 1), whatever the monetary value says.
    pop = gg.p_ * gg.v_ / (gg.q_ - 1)
    np.testing.assert_allclose(gg.conditional_expected_average_profit([0, 0], [0.0, 99.0]), pop)
    # More purchases -> more weight on the customer's own mean.
    own = gg.conditional_expected_average_profit(np.array([1, 5, 50]), np.full(3, 3 * pop))
    assert pop < own[0] < own[1] < own[2] < 3 * pop


def test_params_dict_is_plain_json(fitted_small) -> None:
    bg, gg = fitted_small
    for model, keys in [(bg, ["r", "alpha", "a", "b", "time_unit"]), (gg, ["p", "q", "v"])]:
        params = model.params_dict()
        assert list(params) == keys
        assert all(type(v) is float for k, v in params.items() if k != "time_unit")
        json.dumps(params)
    assert bg.params_dict()["time_unit"] == "days"


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "match"),
    [
        ([], [], [], "empty"),
        ([0, 0, 0], [0, 0, 0], [10, 20, 30], "no customer has a repeat purchase"),
        ([1, 0, 0, 0], [5, 0, 0, 0], [10, 10, 10, 10], "not identified"),
    ],
)
def test_bgnbd_degenerate_input_raises_model_fit_error(frequency, recency, T, match) -> None:
    with pytest.raises(ModelFitError, match=match):
        BetaGeoModel().fit(frequency, recency, T)


def test_gamma_gamma_degenerate_input_raises_model_fit_error() -> None:
    with pytest.raises(ModelFitError, match="no repeat customer with positive spend"):
        GammaGammaModel().fit([0, 2, 3], [10.0, 0.0, -1.0])
    with pytest.raises(ModelFitError):  # no spread in spend: p -> infinity
        GammaGammaModel().fit([1, 2, 3, 4] * 10, [10.0] * 40)
    # True q < 1: the mean spend does not exist, so no CLV can be computed from it.
    rng = np.random.default_rng(1)
    x = rng.integers(1, 10, 5000).astype(float)
    m = rng.gamma(6 * x, 1 / (x * rng.gamma(0.7, 1 / 15, 5000)))
    with pytest.raises(ModelFitError, match=r"q = .* <= 1"):
        GammaGammaModel().fit(x, m)


@pytest.mark.parametrize(
    ("frequency", "recency", "T"),
    [([1], [5], [4]), ([-1], [0], [4]), ([np.nan], [0], [4]), ([0], [2], [4]), ([1.5], [1], [4])],
)
def test_invalid_input_raises_value_error(frequency, recency, T) -> None:
    with pytest.raises(ValueError):
        BetaGeoModel().fit(frequency, recency, T)


def test_penalizer_shrinks_parameters(small_sim) -> None:
    x, t_x, T, _ = small_sim
    plain = BetaGeoModel().fit(x, t_x, T)
    shrunk = BetaGeoModel(penalizer=0.1).fit(x, t_x, T)
    assert sum(_bg_params(shrunk)) < sum(_bg_params(plain))
    assert shrunk.log_likelihood_ < plain.log_likelihood_


def test_unfitted_model_raises() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        BetaGeoModel().probability_alive(1, 1, 2)
    with pytest.raises(RuntimeError, match="not fitted"):
        GammaGammaModel().params_dict()


# --------------------------------------------------------------------------------------------
# summarize_transactions on a hand-made example
# --------------------------------------------------------------------------------------------


def test_summarize_transactions_conventions() -> None:
    tx = pd.DataFrame(
        {
            "customer": ["a", "a", "a", "a", "b", "c", "c"],
            "at": pd.to_datetime(
                [
                    "2024-01-01 09:00",
                    "2024-01-01 17:00",  # same day: merged into one purchase of 30
                    "2024-01-08 10:00",
                    "2024-02-01 00:00",  # after observation_end: ignored
                    "2024-01-10 12:00",
                    "2024-01-03 23:30",
                    "2024-01-15 08:00",
                ]
            ),
            "amount": [10.0, 20.0, 50.0, 999.0, 7.0, 5.0, -5.0],
        }
    )
    out = summarize_transactions(tx["customer"], tx["at"], tx["amount"], "2024-01-31")
    assert list(out.index) == ["a", "b", "c"]
    assert out.loc["a"].to_dict() == {
        "frequency": 1,
        "recency": 7.0,
        "T": 30.0,
        "monetary_value": 50.0,
    }
    assert out.loc["b"].to_dict() == {
        "frequency": 0,
        "recency": 0.0,
        "T": 21.0,
        "monetary_value": 0.0,
    }
    assert out.loc["c"].to_dict() == {
        "frequency": 1,
        "recency": 12.0,
        "T": 28.0,
        "monetary_value": -5.0,
    }
    weeks = summarize_transactions(tx["customer"], tx["at"], tx["amount"], "2024-01-31", 7.0)
    assert weeks.loc["a", "T"] == pytest.approx(30 / 7)
    # tz-aware timestamps are bucketed by UTC day.
    aware = summarize_transactions(
        ["x", "x"],
        pd.to_datetime(["2024-01-01 23:30", "2024-01-02 00:30"]).tz_localize("UTC"),
        [1.0, 2.0],
        pd.Timestamp("2024-01-05", tz="UTC"),
    )
    assert aware.loc["x", "frequency"] == 1 and aware.loc["x", "T"] == 4.0
