"""Customer lifetime value: BG/NBD purchase counts + Gamma-Gamma spend, in numpy/scipy.

Why not the ``lifetimes`` package: it is unmaintained, pulls in autograd, breaks with pandas 3 and
is slow. The formulas below are the published closed forms. They are fitted by maximum
likelihood on the log-parameters, with an analytic gradient and Hessian (trust-region Newton,
~10 iterations), on *compressed* data (one row per distinct ``(x, t_x, T)`` with a weight),
which is exact and fast.

References
----------
- [FHL05] Fader, Hardie & Lee (2005), "Counting your customers the easy way: an alternative to
  the Pareto/NBD model", Marketing Science 24(2). Likelihood eq. (6), E[X(t)] eq. (7),
  conditional expectation eq. (10); P(alive) from Hardie's note 021 ("Computing P(alive) using
  the BG/NBD model").
- [FHL05b] Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value curves for customer base
  analysis", Journal of Marketing Research 42(4); and Fader & Hardie (2013), "The Gamma-Gamma
  model of monetary value" (note 025): likelihood and conditional expected spend eq. (5).

Conventions (those of [FHL05] and ``lifetimes``): ``frequency`` x is the number of *repeat*
purchase periods (distinct purchase days minus one), ``recency`` t_x is the time from the first
to the last purchase, ``T`` the time from the first purchase to the end of observation, and
``monetary_value`` the mean value of the repeat purchases (0 when x = 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special

from profile_enrichment.errors import ModelFitError

__all__ = [
    "BetaGeoModel",
    "CompressedRFM",
    "GammaGammaModel",
    "bg_nbd_log_likelihood",
    "compress_rfm",
    "customer_lifetime_value",
    "gamma_gamma_log_likelihood",
    "summarize_transactions",
]

FloatArray = NDArray[np.float64]

# Log-parameters beyond +-_LOG_BOUND (e^25 ~ 7e10) mean the optimum is at infinity (a degenerate
# data set); such a solution is reported as non-convergence.
_LOG_BOUND = 25.0
# Largest gradient (of the mean log-likelihood, w.r.t. log-parameters) accepted at a stop.
_GRAD_ACCEPT = 1e-6
# Largest standard error of a log-parameter for the fit to count as identified (see
# _check_identified).
_MAX_LOG_SE = 5.0


# --------------------------------------------------------------------------------------------
# Data preparation
# --------------------------------------------------------------------------------------------


def _to_naive_utc(values: pd.DatetimeIndex) -> pd.DatetimeIndex:
    return values.tz_convert("UTC").tz_localize(None) if values.tz is not None else values


def summarize_transactions(
    customer_ids: ArrayLike,
    purchase_dates: ArrayLike,
    amounts: ArrayLike,
    observation_end: object,
    time_unit_days: float = 1.0,
) -> pd.DataFrame:
    """Per-customer frequency / recency / T / monetary_value from raw transactions.

    Reference implementation of the [FHL05] summary (the feature store computes the same in SQL).
    Purchases are bucketed by calendar day (UTC for tz-aware input); several orders on one day
    count as one purchase whose value is the day's total. Transactions after ``observation_end``
    are ignored. Times are in units of ``time_unit_days`` days (7.0 for weeks).
    """
    if time_unit_days <= 0:
        raise ValueError(f"time_unit_days must be > 0, got {time_unit_days}")
    days = _to_naive_utc(pd.DatetimeIndex(pd.to_datetime(purchase_dates))).normalize()
    end = pd.Timestamp(observation_end)
    if end.tzinfo is not None:
        end = end.tz_convert("UTC").tz_localize(None)
    end = end.normalize()
    frame = pd.DataFrame(
        {
            "customer_id": np.asarray(customer_ids),
            "day": days,
            "amount": np.asarray(amounts, dtype=np.float64),
        }
    )
    frame = frame[frame["day"] <= end]
    daily = frame.groupby(["customer_id", "day"], sort=True)["amount"].sum().reset_index()
    by_customer = daily.groupby("customer_id", sort=True)
    first = by_customer["day"].transform("min")
    repeat_amount = daily["amount"].where(daily["day"] > first, 0.0)
    one_unit = pd.Timedelta(days=1) * time_unit_days
    out = pd.DataFrame(
        {
            "frequency": by_customer.size().astype(np.int64) - 1,
            "recency": (by_customer["day"].max() - by_customer["day"].min()) / one_unit,
            "T": (end - by_customer["day"].min()) / one_unit,
            "repeat_total": repeat_amount.groupby(daily["customer_id"], sort=True).sum(),
        }
    )
    out["monetary_value"] = np.where(
        out["frequency"] > 0, out["repeat_total"] / out["frequency"].clip(lower=1), 0.0
    )
    out = out.drop(columns="repeat_total").astype({"recency": "float64", "T": "float64"})
    out.index.name = "customer_id"
    return out


class CompressedRFM(NamedTuple):
    """Distinct RFM rows (sorted), their multiplicities, and ``inverse`` to map results back."""

    frequency: FloatArray
    recency: FloatArray
    T: FloatArray
    monetary_value: FloatArray | None
    weights: NDArray[np.int64]
    inverse: NDArray[np.intp]


class _Grouped(NamedTuple):
    rows: list[FloatArray]  # distinct rows, column by column, in lexicographic order
    inverse: NDArray[np.intp]  # input row -> distinct row
    uniques: list[FloatArray]  # distinct values of each column
    codes: list[NDArray[np.intp]]  # distinct row -> index into uniques, per column


def _group_rows(columns: Sequence[FloatArray]) -> _Grouped:
    """Distinct rows of equal-length 1-D float columns, with the maps to and from them."""
    n = columns[0].size
    if n == 0:
        empty = np.zeros(0, dtype=np.intp)
        return _Grouped(
            [c.copy() for c in columns], empty, [c.copy() for c in columns], [empty] * len(columns)
        )
    uniques, codes = [], []
    for col in columns:
        values, code = np.unique(col + 0.0, return_inverse=True)  # + 0.0 folds -0.0 into 0.0
        uniques.append(values)
        codes.append(code.reshape(-1).astype(np.int64))
    sizes = [u.size for u in uniques]
    if float(np.prod(np.asarray(sizes, dtype=np.float64))) < 2.0**62:
        # Mixed-radix int64 key: one integer sort instead of a multi-key lexsort.
        key = codes[0]
        for code, size in zip(codes[1:], sizes[1:], strict=True):
            key = key * size + code
        unique_keys, inverse = np.unique(key, return_inverse=True)
        digits = []
        for size in reversed(sizes[1:]):
            unique_keys, digit = np.divmod(unique_keys, size)
            digits.append(digit)
        digits.append(unique_keys)
        row_codes = [d.astype(np.intp) for d in reversed(digits)]
        rows = [u[d] for u, d in zip(uniques, row_codes, strict=True)]
        return _Grouped(rows, inverse.reshape(-1).astype(np.intp), uniques, row_codes)
    order = np.lexsort(codes[::-1])
    sorted_codes = [code[order] for code in codes]
    is_new = np.ones(n, dtype=bool)
    is_new[1:] = np.any([np.diff(code) != 0 for code in sorted_codes], axis=0)
    inverse = np.empty(n, dtype=np.intp)
    inverse[order] = np.cumsum(is_new) - 1
    row_codes = [code[is_new].astype(np.intp) for code in sorted_codes]
    rows = [u[code] for u, code in zip(uniques, row_codes, strict=True)]
    return _Grouped(rows, inverse, uniques, row_codes)


def compress_rfm(
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary: ArrayLike | None = None,
) -> CompressedRFM:
    """Collapse identical ``(x, t_x, T[, m])`` rows into one row with an integer weight.

    The likelihood is a sum over customers, so fitting the distinct rows with their counts as
    weights is exact (the trick used in [FHL05]'s spreadsheet) and much faster.
    ``values[inverse]`` expands a per-row result back to the original customers.
    """
    raw = [frequency, recency, T] + ([] if monetary is None else [monetary])
    columns = [np.atleast_1d(np.asarray(col, dtype=np.float64)) for col in raw]
    n = columns[0].size
    if any(col.shape != (n,) for col in columns):
        raise ValueError("compress_rfm: inputs must be 1-D arrays of the same length")
    if not all(np.all(np.isfinite(col)) for col in columns):
        raise ValueError("compress_rfm: inputs must be finite (no NaN/inf)")
    rows, inverse, _, _ = _group_rows(columns)
    counts = np.bincount(inverse, minlength=rows[0].size).astype(np.int64)
    return CompressedRFM(
        frequency=rows[0],
        recency=rows[1],
        T=rows[2],
        monetary_value=rows[3] if monetary is not None else None,
        weights=counts,
        inverse=inverse,
    )


def _validate_rfm(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, weights: ArrayLike | None
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    x = np.asarray(frequency, dtype=np.float64).reshape(-1)
    t_x = np.asarray(recency, dtype=np.float64).reshape(-1)
    age = np.asarray(T, dtype=np.float64).reshape(-1)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if not (x.size == t_x.size == age.size == w.size):
        raise ValueError("frequency, recency, T (and weights) must have the same length")
    for name, arr in (("frequency", x), ("recency", t_x), ("T", age), ("weights", w)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if np.any(arr < 0):
            raise ValueError(f"{name} must be non-negative")
    if np.any(x != np.round(x)):
        raise ValueError("frequency must be integer-valued (count of repeat purchase periods)")
    if np.any(t_x > age * (1 + 1e-12) + 1e-12):
        raise ValueError("recency must not exceed T")
    if np.any((x == 0) & (t_x > 0)):
        raise ValueError("recency must be 0 for customers with frequency 0")
    return x, t_x, age, w


# --------------------------------------------------------------------------------------------
# Optimization helpers
# --------------------------------------------------------------------------------------------


def _wsum(w: FloatArray, values: FloatArray) -> float:
    """Weighted sum without BLAS: ``w @ v`` wakes OpenBLAS threads whose spin-waiting costs more
    than the whole objective on small, shared machines."""
    return float(np.sum(w * values))


class _LogParamObjective:
    """Mean negative log-likelihood (+ L2 penalty) in log-parameters, with a one-point cache.

    Subclasses implement ``_evaluate(theta)`` returning the mean log-likelihood, its gradient and
    Hessian w.r.t. the natural parameters ``theta``; the Hessian is computed lazily (trust-region
    trial points that get rejected never pay for it).
    """

    def __init__(self, penalizer: float) -> None:
        self.penalizer = penalizer
        self._key: bytes | None = None
        self._cache: tuple[float, FloatArray, Callable[[], FloatArray]] | None = None

    def _evaluate(self, theta: FloatArray) -> tuple[float, FloatArray, Callable[[], FloatArray]]:
        raise NotImplementedError

    def _get(self, log_params: FloatArray) -> tuple[float, FloatArray, Callable[[], FloatArray]]:
        key = np.asarray(log_params, dtype=np.float64).tobytes()
        if key != self._key or self._cache is None:
            with np.errstate(all="ignore"):
                self._cache = self._evaluate(np.exp(log_params))
            self._key = key
        return self._cache

    def value_and_grad(self, log_params: FloatArray) -> tuple[float, FloatArray]:
        """Objective and gradient w.r.t. the log-parameters (chain rule: θ ∘ ∂/∂θ)."""
        theta = np.exp(log_params)
        ll, grad, _ = self._get(log_params)
        value = -ll + self.penalizer * float(np.sum(theta**2))
        g = -theta * grad + 2.0 * self.penalizer * theta**2
        if not (np.isfinite(value) and np.all(np.isfinite(g))):
            return np.inf, np.zeros_like(theta)  # trust region / line search then backs off
        return value, g

    def total_log_likelihood(self, log_params: FloatArray, total_weight: float) -> float:
        """Unpenalized weighted log-likelihood sum at ``log_params``."""
        return float(self._get(log_params)[0]) * total_weight

    def hessian(self, log_params: FloatArray, penalized: bool = True) -> FloatArray:
        """Hessian w.r.t. the log-parameters: θθᵀ ∘ H + diag(θ ∘ g)."""
        theta = np.exp(log_params)
        _, grad, hess = self._get(log_params)
        h = -(np.outer(theta, theta) * hess() + np.diag(theta * grad))
        if penalized:
            h = h + np.diag(4.0 * self.penalizer * theta**2)
        return h


def _stop_when_diverging(intermediate_result: optimize.OptimizeResult) -> None:
    """Stop early once a log-parameter is beyond the bound: the optimum is at infinity."""
    if np.any(np.abs(intermediate_result.x) > _LOG_BOUND):
        raise StopIteration


def _minimize_log_params(
    objective: _LogParamObjective,
    starts: Sequence[FloatArray],
    tol: float,
    max_iter: int,
    model_name: str,
) -> FloatArray:
    """Trust-region Newton (exact Hessian) on the log-parameters, L-BFGS-B as a fallback.

    The first start that converges wins. Raises ModelFitError when none does, or when the
    optimum runs off to infinity (a parameter beyond e^±25: degenerate data).
    """
    messages: list[str] = []
    for start in starts:
        x0 = np.asarray(start, dtype=np.float64)
        for method in ("trust-exact", "L-BFGS-B"):
            if method == "trust-exact":
                kwargs: dict[str, object] = {
                    "hess": objective.hessian,
                    "options": {"gtol": tol, "maxiter": max_iter},
                }
            else:
                kwargs = {
                    "bounds": [(-_LOG_BOUND - 5, _LOG_BOUND + 5)] * x0.size,
                    "options": {"maxiter": max_iter, "ftol": 1e-15, "gtol": tol},
                }
            with np.errstate(all="ignore"):
                try:
                    res = optimize.minimize(
                        objective.value_and_grad,
                        x0,
                        jac=True,
                        method=method,
                        callback=_stop_when_diverging,
                        **kwargs,
                    )
                except (ValueError, np.linalg.LinAlgError) as err:
                    messages.append(f"{method}: {err}")
                    continue
            finite = bool(np.all(np.isfinite(res.x)) and np.isfinite(res.fun))
            grad = objective.value_and_grad(res.x)[1] if finite else np.full(x0.size, np.inf)
            if not finite or np.any(np.abs(res.x) > _LOG_BOUND):
                messages.append(f"{method}: a parameter ran off to 0 or infinity")
                continue
            # Judge convergence by the gradient itself: L-BFGS-B may report "ABNORMAL" line
            # searches at machine precision, and trust-exact "success" is checked the same way.
            grad_norm = float(np.max(np.abs(grad)))
            if grad_norm <= max(_GRAD_ACCEPT, tol):
                return np.asarray(res.x, dtype=np.float64)
            messages.append(f"{method}: stopped ({res.message}) with gradient {grad_norm:.2g}")
    raise ModelFitError(
        f"{model_name} did not converge ({'; '.join(dict.fromkeys(messages))}). The data may be "
        "degenerate (e.g. almost no repeat purchases); a penalizer (e.g. 0.001-0.1) can help."
    )


def _log_param_standard_errors(
    objective: _LogParamObjective, log_params: FloatArray, total_weight: float, penalized: bool
) -> FloatArray:
    """Asymptotic standard errors of the log-parameters from the observed information
    (Hessian of the total log-likelihood); NaN when it is not positive definite."""
    info = objective.hessian(log_params, penalized=penalized) * total_weight
    try:
        chol = np.linalg.cholesky(info)
    except np.linalg.LinAlgError:
        return np.full(log_params.size, np.nan)
    inv_chol = np.linalg.inv(chol)
    return np.sqrt(np.sum(inv_chol**2, axis=0))


def _check_identified(
    objective: _LogParamObjective,
    log_params: FloatArray,
    total_weight: float,
    names: Sequence[str],
    model_name: str,
) -> FloatArray:
    """Raise ModelFitError when the optimum is not a well-defined interior maximum.

    A likelihood that keeps rising towards a boundary (e.g. r, α → ∞ together, which is the
    Poisson limit, on tiny or degenerate data) lets the optimizer stop on a flat ridge with huge
    parameters. Its sign is a (near-)singular information matrix: se(log θ) > _MAX_LOG_SE means
    the data do not pin θ down within a factor e^5. Returns the standard errors of θ (delta
    method, from the unpenalized information; NaN when that is singular).
    """
    se_log = _log_param_standard_errors(objective, log_params, total_weight, penalized=True)
    bad = [n for n, se in zip(names, se_log, strict=True) if not se <= _MAX_LOG_SE]
    if bad:
        raise ModelFitError(
            f"{model_name}: parameters {', '.join(bad)} are not identified by the data (the "
            "likelihood is flat there: too few or degenerate customers). Fit on more customers "
            "or raise the penalizer."
        )
    se_log = _log_param_standard_errors(objective, log_params, total_weight, penalized=False)
    return np.exp(log_params) * se_log


# --------------------------------------------------------------------------------------------
# BG/NBD
# --------------------------------------------------------------------------------------------


def bg_nbd_log_likelihood(
    params: Sequence[float],
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    weights: ArrayLike | None = None,
) -> float:
    """Weighted BG/NBD log-likelihood sum, [FHL05] eq. (6), evaluated in log space.

    ``params`` is ``(r, alpha, a, b)``. Each term is
    ``ln Γ(r+x) - ln Γ(r) + r ln α + ln B(a, b+x) - ln B(a, b)
    + logaddexp(-(r+x) ln(α+T), [x>0] (ln a - ln(b+x-1) - (r+x) ln(α+t_x)))``,
    which stays finite for large counts (x = 500, T = 5000) where the raw formula overflows.
    """
    r, alpha, a, b = (float(v) for v in params)
    x = np.asarray(x, dtype=np.float64)
    t_x = np.asarray(t_x, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    beta_part = special.betaln(a, b + x) - special.betaln(a, b)
    a2 = -(r + x) * np.log(alpha + T)
    has_repeat = x > 0
    x_safe = np.where(has_repeat, x, 1.0)
    a3 = np.where(
        has_repeat,
        np.log(a) - np.log(b + x_safe - 1) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    return float(np.sum(w * (a1 + beta_part + np.logaddexp(a2, a3))))


class _BGNBDObjective(_LogParamObjective):
    """BG/NBD mean log-likelihood with analytic gradient and Hessian, written as

    ``ll = A(x) + r ln α - (r+x) ln(α+T) + softplus(d)``,
    ``d = ln a - ln(b+x-1) - (r+x) [ln(α+t_x) - ln(α+T)]`` (d = -inf when x = 0),

    where ``σ(d)`` is the posterior probability that the customer dropped out after the last
    purchase. Terms in x alone are evaluated once per distinct x, terms in T alone once per
    distinct T (with pre-aggregated weights); only the ``d`` terms of repeat buyers are per row.
    """

    def __init__(self, grouped: _Grouped, w: FloatArray, scale: float, penalizer: float) -> None:
        """``grouped`` holds the distinct (x, t_x, T) rows; times are multiplied by ``scale``."""
        super().__init__(penalizer)
        self.xu, txu, tu = grouped.uniques
        self.txu, self.Tu = txu * scale, tu * scale
        x_inv, tx_inv, T_inv = grouped.codes
        x = grouped.rows[0]
        w = w / w.sum()
        self.wx = np.bincount(x_inv, weights=w, minlength=self.xu.size)
        self.w_T = np.bincount(T_inv, weights=w, minlength=self.Tu.size)
        self.wx_T = np.bincount(T_inv, weights=w * x, minlength=self.Tu.size)
        rep = x > 0  # rows with a repeat purchase: the only ones with a d term
        self.xi, self.txi, self.Ti = x_inv[rep], tx_inv[rep], T_inv[rep]
        self.w, self.x = w[rep], x[rep]
        self.xu1 = np.maximum(self.xu, 1.0)  # b + x - 1 is only used where x >= 1

    def _evaluate(self, theta: FloatArray) -> tuple[float, FloatArray, Callable[[], FloatArray]]:
        r, alpha, a, b = theta
        xu, wx, w, xi = self.xu, self.wx, self.w, self.xi
        lg, dg, tg = special.gammaln, special.digamma, special.polygamma
        bxm1 = b + self.xu1 - 1.0
        inv_bxm1 = 1.0 / bxm1
        # Terms in T only, on the distinct T values.
        lTu = np.log(alpha + self.Tu)
        iTu = 1.0 / (alpha + self.Tu)
        s_lT, s_xlT = float(self.w_T @ lTu), float(self.wx_T @ lTu)
        s_iT, s_xiT = float(self.w_T @ iTu), float(self.wx_T @ iTu)
        # d terms, per repeat-buyer row.
        l_T, i_T = lTu[self.Ti], iTu[self.Ti]
        l_tx = np.log(alpha + self.txu)[self.txi]
        i_tx = (1.0 / (alpha + self.txu))[self.txi]
        rx = r + self.x
        d_l = l_tx - l_T
        rd_i = rx * (i_tx - i_T)
        d = (np.log(a) - np.log(bxm1))[xi] - rx * d_l
        sig = special.expit(d)
        w_sig = w * sig
        a_x = lg(r + xu) - lg(r) + lg(a + b) + lg(b + xu) - lg(b) - lg(a + b + xu)
        ll = (
            float(wx @ a_x)
            + r * np.log(alpha)
            - (r * s_lT + s_xlT)
            + _wsum(w, np.logaddexp(0.0, d))
        )
        sig_x = np.bincount(xi, weights=w_sig, minlength=xu.size)
        ab_x = dg(a + b) - dg(a + b + xu)
        grad = np.array(
            [
                float(wx @ (dg(r + xu) - dg(r))) + np.log(alpha) - s_lT - _wsum(w_sig, d_l),
                r / alpha - (r * s_iT + s_xiT) - _wsum(w_sig, rd_i),
                float(wx @ ab_x) + float(sig_x.sum()) / a,
                float(wx @ (ab_x - dg(b) + dg(b + xu))) - float(sig_x @ inv_bxm1),
            ]
        )

        def hessian() -> FloatArray:
            ws2 = w_sig * (1.0 - sig)  # w * softplus''(d)
            s2_x = np.bincount(xi, weights=ws2, minlength=xu.size)
            s2dl_x = np.bincount(xi, weights=ws2 * d_l, minlength=xu.size)
            s2di_x = np.bincount(xi, weights=ws2 * rd_i, minlength=xu.size)
            iTu2 = iTu * iTu
            s_rxiT2 = r * float(self.w_T @ iTu2) + float(self.wx_T @ iTu2)
            tab_x = tg(1, a + b) - tg(1, a + b + xu)
            h = np.empty((4, 4))
            h[0, 0] = float(wx @ (tg(1, r + xu) - tg(1, r))) + _wsum(ws2, d_l * d_l)
            h[0, 1] = 1.0 / alpha - s_iT - _wsum(w_sig, i_tx - i_T) + _wsum(ws2, d_l * rd_i)
            h[1, 1] = (
                -r / alpha**2
                + s_rxiT2
                + _wsum(ws2, rd_i * rd_i)
                + _wsum(w_sig, rx * (i_tx * i_tx - i_T * i_T))
            )
            h[0, 2] = -float(s2dl_x.sum()) / a
            h[0, 3] = float(s2dl_x @ inv_bxm1)
            h[1, 2] = -float(s2di_x.sum()) / a
            h[1, 3] = float(s2di_x @ inv_bxm1)
            h[2, 2] = float(wx @ tab_x) + (float(s2_x.sum()) - float(sig_x.sum())) / a**2
            h[2, 3] = float(wx @ tab_x) - float(s2_x @ inv_bxm1) / a
            h[3, 3] = float(wx @ (tab_x - tg(1, b) + tg(1, b + xu))) + float(
                (s2_x + sig_x) @ (inv_bxm1 * inv_bxm1)
            )
            iu = np.triu_indices(4, 1)
            h[iu[1], iu[0]] = h[iu]
            return h

        return ll, grad, hessian


class BetaGeoModel:
    """BG/NBD model of repeat-purchase counts [FHL05].

    Purchases follow a Poisson process with rate λ ~ Gamma(r, α); after each purchase the customer
    drops out with probability p ~ Beta(a, b). ``penalizer`` adds ``penalizer * Σ θ²`` to the mean
    negative log-likelihood with α in units where max(T) = 1, as ``lifetimes`` does, so the penalty
    does not depend on the time unit. ``time_unit`` only labels the parameters (α is a time scale).
    """

    def __init__(
        self,
        penalizer: float = 0.0,
        tol: float = 1e-9,
        max_iter: int = 200,
        time_unit: str = "days",
    ) -> None:
        self.penalizer = penalizer
        self.tol = tol
        self.max_iter = max_iter
        self.time_unit = time_unit

    # -- fitting ---------------------------------------------------------------------------
    log_likelihood = staticmethod(bg_nbd_log_likelihood)

    def fit(
        self,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        weights: ArrayLike | None = None,
    ) -> BetaGeoModel:
        """Maximum-likelihood fit on the distinct ``(x, t_x, T)`` rows. Returns self.

        Raises :class:`ModelFitError` on empty input, no repeat purchasers, non-convergence or
        non-finite parameters (the caller keeps the previous champion). Invalid input (NaN,
        negative values, recency > T) is a caller bug and raises ``ValueError``.
        """
        if self.penalizer < 0:
            raise ValueError("penalizer must be >= 0")
        x, t_x, age, w = _validate_rfm(frequency, recency, T, weights)
        keep = w > 0
        x, t_x, age, w = x[keep], t_x[keep], age[keep], w[keep]
        if x.size == 0:
            raise ModelFitError("BG/NBD fit: no customers (empty input)")
        if not np.any(x > 0):
            raise ModelFitError(
                "BG/NBD fit: no customer has a repeat purchase (all frequency 0); "
                "the model is not identified"
            )
        if age.max() <= 0:
            raise ModelFitError("BG/NBD fit: all customers have T = 0 (no observation time)")

        grouped = _group_rows([x, t_x, age])
        cw = np.bincount(grouped.inverse, weights=w, minlength=grouped.rows[0].size)
        scale = 1.0 / age.max()  # fit with max(T) = 1: a well-conditioned start for any unit
        objective = _BGNBDObjective(grouped, cw, scale, self.penalizer)
        starts = [np.zeros(4), np.log([0.5, 0.1, 1.0, 3.0]), np.full(4, 0.1)]
        log_params = _minimize_log_params(objective, starts, self.tol, self.max_iter, "BG/NBD fit")
        r, alpha_scaled, a, b = np.exp(log_params)
        params = np.array([r, alpha_scaled / scale, a, b])
        if not np.all(np.isfinite(params)) or np.any(params <= 0):
            raise ModelFitError(f"BG/NBD fit gave non-finite parameters {params.tolist()}")
        self.r_, self.alpha_, self.a_, self.b_ = (float(v) for v in params)
        # The time rescaling multiplies each likelihood term by scale^x; undo it.
        self.log_likelihood_ = objective.total_log_likelihood(log_params, float(w.sum()))
        self.log_likelihood_ += float(np.log(scale) * np.sum(w * x))
        if not np.isfinite(self.log_likelihood_):
            raise ModelFitError("BG/NBD fit: log-likelihood is not finite at the optimum")
        se = _check_identified(
            objective, log_params, float(w.sum()), ("r", "alpha", "a", "b"), "BG/NBD fit"
        )
        se[1] /= scale
        self.standard_errors_ = dict(zip(("r", "alpha", "a", "b"), map(float, se), strict=True))
        self.n_customers_ = float(w.sum())
        self.n_distinct_rows_ = int(cw.size)
        self.converged_ = True
        return self

    def params_dict(self) -> dict[str, float | str]:
        """Fitted parameters as plain floats, plus the time unit they are expressed in."""
        self._check_fitted()
        return {
            "r": self.r_,
            "alpha": self.alpha_,
            "a": self.a_,
            "b": self.b_,
            "time_unit": self.time_unit,
        }

    def _check_fitted(self) -> None:
        if not hasattr(self, "r_"):
            raise RuntimeError("BetaGeoModel is not fitted; call fit() first")

    def _params(self) -> tuple[float, float, float, float]:
        self._check_fitted()
        a = self.a_
        if abs(a - 1.0) < 1e-7:  # removable singularity of eqs. (7)/(10) at a = 1
            a = 1.0 + 1e-7
        return self.r_, self.alpha_, a, self.b_

    # -- predictions -----------------------------------------------------------------------
    def probability_alive(
        self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """P(alive | x, t_x, T) = 1 / (1 + [x>0] a/(b+x-1) ((α+T)/(α+t_x))^(r+x)) (note 021).

        Computed as a logistic of a log-odds, so it is stable for large x; equals 1 when x = 0
        (in the BG/NBD a customer can only drop out right after a repeat purchase).
        """
        r, alpha, a, b = self._params()
        x = np.asarray(frequency, dtype=np.float64)
        t_x = np.asarray(recency, dtype=np.float64)
        age = np.asarray(T, dtype=np.float64)
        return np.exp(self._log_p_alive(r, alpha, a, b, x, t_x, age))

    @staticmethod
    def _log_p_alive(
        r: float, alpha: float, a: float, b: float, x: FloatArray, t_x: FloatArray, T: FloatArray
    ) -> FloatArray:
        has_repeat = x > 0
        x1 = np.maximum(x, 1.0)
        log_odds = (
            np.log(a) - np.log(b + x1 - 1) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
        )
        return np.where(has_repeat, -np.logaddexp(0.0, log_odds), 0.0)

    @staticmethod
    def _one_minus_survival_term(
        r: float, alpha: float, a: float, b: float, x: FloatArray, T: FloatArray, t: FloatArray
    ) -> FloatArray:
        """(a+b+x-1)/(a-1) * [1 - ((α+T)/(α+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)].

        Uses Euler's transformation 2F1(A,B;C;z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z): the
        product becomes (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z), whose parameters stay small
        for large x, so nothing overflows (the direct form does for x in the hundreds).
        """
        log1mz = np.log(alpha + T) - np.log(alpha + T + t)
        z = -np.expm1(log1mz)  # t / (α+T+t)
        c = a + b + x - 1
        hyp = special.hyp2f1(a + b - 1 - r, a - 1, c, z)
        term = np.exp((a - 1) * log1mz) * hyp
        bad = ~np.isfinite(term)
        if np.any(bad):  # fall back to the direct form where the transformed one fails
            xb = np.broadcast_to(x, term.shape)[bad]
            direct = np.exp((r + xb) * np.broadcast_to(log1mz, term.shape)[bad]) * special.hyp2f1(
                r + xb, b + xb, a + b + xb - 1, np.broadcast_to(z, term.shape)[bad]
            )
            term = term.copy()
            term[bad] = direct
        return (c / (a - 1)) * (1.0 - term)

    def expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """E[Y(t) | x, t_x, T]: expected purchases in the next ``t`` time units, [FHL05] eq. (10).

        Arguments broadcast against each other (e.g. ``t[:, None]`` for a horizon grid).
        """
        r, alpha, a, b = self._params()
        x = np.asarray(frequency, dtype=np.float64)
        t_x = np.asarray(recency, dtype=np.float64)
        age = np.asarray(T, dtype=np.float64)
        p_alive = np.exp(self._log_p_alive(r, alpha, a, b, x, t_x, age))
        return self.expected_purchases_if_alive(t, x, age) * p_alive

    def expected_purchases_if_alive(
        self, t: ArrayLike, frequency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """E[Y(t) | alive at T, x, T]: the numerator of [FHL05] eq. (10); recency-free.

        ``expected_purchases = expected_purchases_if_alive * probability_alive``; split out so
        a horizon grid can be evaluated once per distinct (x, T).
        """
        r, alpha, a, b = self._params()
        t_arr = np.asarray(t, dtype=np.float64)
        if np.any(t_arr < 0):
            raise ValueError("t must be >= 0")
        x = np.asarray(frequency, dtype=np.float64)
        age = np.asarray(T, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = self._one_minus_survival_term(r, alpha, a, b, x, age, t_arr)
        return np.where(t_arr == 0, 0.0, out)

    def expected_purchases_new(self, t: ArrayLike) -> FloatArray:
        """E[X(t)] for a new, randomly chosen customer, [FHL05] eq. (7) (tracking plots)."""
        r, alpha, a, b = self._params()
        t_arr = np.asarray(t, dtype=np.float64)
        if np.any(t_arr < 0):
            raise ValueError("t must be >= 0")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = self._one_minus_survival_term(
                r, alpha, a, b, np.float64(0.0), np.float64(0.0), t_arr
            )
        return np.where(t_arr == 0, 0.0, out)


# --------------------------------------------------------------------------------------------
# Gamma-Gamma
# --------------------------------------------------------------------------------------------


def gamma_gamma_log_likelihood(
    params: Sequence[float],
    frequency: ArrayLike,
    monetary_value: ArrayLike,
    weights: ArrayLike | None = None,
) -> float:
    """Weighted Gamma-Gamma log-likelihood of mean spend ``m`` over ``x`` purchases [FHL05b].

    ``params`` is ``(p, q, v)`` (v = γ). Each term is the density of the mean of x Gamma(p, ν)
    spends with ν ~ Gamma(q, γ): ``ln Γ(px+q) - ln Γ(px) - ln Γ(q) + q ln γ + (px-1) ln m
    + px ln x - (px+q) ln(γ + x m)``. Requires x > 0 and m > 0.
    """
    p, q, v = (float(val) for val in params)
    x = np.asarray(frequency, dtype=np.float64)
    m = np.asarray(monetary_value, dtype=np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    px = p * x
    terms = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(v)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(v + x * m)
    )
    return float(np.sum(w * terms))


class _GammaGammaObjective(_LogParamObjective):
    """Gamma-Gamma mean log-likelihood with analytic gradient and Hessian in (p, q, v)."""

    def __init__(self, x: FloatArray, m: FloatArray, w: FloatArray, penalizer: float) -> None:
        super().__init__(penalizer)
        self.xu, x_inv = np.unique(x, return_inverse=True)
        self.w = w / w.sum()
        self.wx = np.bincount(x_inv.reshape(-1), weights=self.w, minlength=self.xu.size)
        self.x = x
        self.xm = x * m
        # Parameter-free sums, computed once.
        self.s_logm = _wsum(self.w, np.log(m))
        self.s_xlogm = _wsum(self.w, x * np.log(m))
        self.s_xlogx = _wsum(self.w, x * np.log(x))
        self.s_x = _wsum(self.w, x)

    def _evaluate(self, theta: FloatArray) -> tuple[float, FloatArray, Callable[[], FloatArray]]:
        p, q, v = theta
        xu, wx, w, x = self.xu, self.wx, self.w, self.x
        pxu = p * xu
        l_v = np.log(v + self.xm)
        i_v = 1.0 / (v + self.xm)
        s_l, s_xl = _wsum(w, l_v), _wsum(w, x * l_v)
        ll = (
            float(wx @ (special.gammaln(pxu + q) - special.gammaln(pxu)))
            - special.gammaln(q)
            + q * np.log(v)
            + p * self.s_xlogm
            - self.s_logm
            + p * self.s_xlogx
            - p * s_xl
            - q * s_l
        )
        dg_pxq = special.digamma(pxu + q)
        s_i, s_xi = _wsum(w, i_v), _wsum(w, x * i_v)
        grad = np.array(
            [
                float(wx @ (xu * (dg_pxq - special.digamma(pxu))))
                + self.s_xlogm
                + self.s_xlogx
                - s_xl,
                float(wx @ dg_pxq) - special.digamma(q) + np.log(v) - s_l,
                q / v - p * s_xi - q * s_i,
            ]
        )

        def hessian() -> FloatArray:
            t_pxq = special.polygamma(1, pxu + q)
            s_i2, s_xi2 = _wsum(w, i_v**2), _wsum(w, x * i_v**2)
            h = np.empty((3, 3))
            h[0, 0] = float(wx @ (xu**2 * (t_pxq - special.polygamma(1, pxu))))
            h[0, 1] = h[1, 0] = float(wx @ (xu * t_pxq))
            h[0, 2] = h[2, 0] = -s_xi
            h[1, 1] = float(wx @ t_pxq) - special.polygamma(1, q)
            h[1, 2] = h[2, 1] = 1.0 / v - s_i
            h[2, 2] = -q / v**2 + p * s_xi2 + q * s_i2
            return h

        return float(ll), grad, hessian


class GammaGammaModel:
    """Gamma-Gamma model of the mean spend per repeat purchase [FHL05b], note 025.

    Assumes spend is independent of purchase frequency (check ``frequency_monetary_corr_``,
    which should be near 0). Only repeat customers with positive mean spend are used in the fit.
    """

    def __init__(self, penalizer: float = 0.0, tol: float = 1e-9, max_iter: int = 200) -> None:
        self.penalizer = penalizer
        self.tol = tol
        self.max_iter = max_iter

    log_likelihood = staticmethod(gamma_gamma_log_likelihood)

    def fit(
        self,
        frequency: ArrayLike,
        monetary_value: ArrayLike,
        weights: ArrayLike | None = None,
    ) -> GammaGammaModel:
        """Maximum-likelihood fit on customers with frequency > 0 and monetary_value > 0.

        Customers with a repeat purchase but non-positive mean spend (refund-heavy) cannot enter
        the Gamma likelihood; their (weighted) count is kept in ``n_excluded_nonpositive_``.
        Raises :class:`ModelFitError` when nobody is left, on non-convergence, or when q <= 1.
        """
        if self.penalizer < 0:
            raise ValueError("penalizer must be >= 0")
        x = np.asarray(frequency, dtype=np.float64).reshape(-1)
        m = np.asarray(monetary_value, dtype=np.float64).reshape(-1)
        w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
        w = w.reshape(-1)
        if not (x.size == m.size == w.size):
            raise ValueError("frequency, monetary_value (and weights) must have the same length")
        for name, arr in (("frequency", x), ("monetary_value", m), ("weights", w)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} contains NaN or infinite values")
        if np.any(x < 0) or np.any(w < 0):
            raise ValueError("frequency and weights must be non-negative")
        repeat = (x > 0) & (w > 0)
        use = repeat & (m > 0)
        self.n_excluded_nonpositive_ = float(w[repeat & (m <= 0)].sum())
        if not np.any(use):
            raise ModelFitError(
                "Gamma-Gamma fit: no repeat customer with positive spend "
                f"({self.n_excluded_nonpositive_:g} excluded for non-positive spend)"
            )
        x, m, w = x[use], m[use], w[use]
        # No row compression here: spend is continuous, so rows rarely repeat, and the per-row
        # work is only two logs; the special functions run once per distinct x anyway.
        objective = _GammaGammaObjective(x, m, w, self.penalizer)
        mean_m = float(np.average(m, weights=w))
        starts = [np.log([1.0, 2.0, mean_m]), np.log([5.0, 3.0, 2.0 * mean_m / 5.0]), np.zeros(3)]
        log_params = _minimize_log_params(
            objective, starts, self.tol, self.max_iter, "Gamma-Gamma fit"
        )
        p, q, v = (float(val) for val in np.exp(log_params))
        if not all(np.isfinite([p, q, v])):
            raise ModelFitError(f"Gamma-Gamma fit gave non-finite parameters {[p, q, v]}")
        if q <= 1.0:
            raise ModelFitError(
                f"Gamma-Gamma fit gave q = {q:.4g} <= 1: the population mean spend p*v/(q-1) is "
                "undefined (spend is too heavy-tailed). Try a penalizer or cap outliers."
            )
        self.p_, self.q_, self.v_ = p, q, v
        self.log_likelihood_ = objective.total_log_likelihood(log_params, float(w.sum()))
        se = _check_identified(
            objective, log_params, float(w.sum()), ("p", "q", "v"), "Gamma-Gamma fit"
        )
        self.standard_errors_ = dict(zip(("p", "q", "v"), map(float, se), strict=True))
        self.n_customers_ = float(w.sum())
        self.converged_ = True
        enough = x.size > 2 and np.std(x) > 0 and np.std(m) > 0
        self.frequency_monetary_corr_ = float(np.corrcoef(x, m)[0, 1]) if enough else float("nan")
        return self

    def params_dict(self) -> dict[str, float]:
        """Fitted parameters (p, q, v = γ) as plain floats; v is in the currency of the input."""
        self._check_fitted()
        return {"p": self.p_, "q": self.q_, "v": self.v_}

    def _check_fitted(self) -> None:
        if not hasattr(self, "p_"):
            raise RuntimeError("GammaGammaModel is not fitted; call fit() first")

    @property
    def population_mean_(self) -> float:
        """E[Z] = p v / (q - 1): expected spend per purchase of an unseen customer."""
        self._check_fitted()
        return self.p_ * self.v_ / (self.q_ - 1.0)

    def conditional_expected_average_profit(
        self, frequency: ArrayLike, monetary_value: ArrayLike
    ) -> FloatArray:
        """E[Z | x, m] = (q-1)/(px+q-1) · pv/(q-1) + px/(px+q-1) · m  (note 025, eq. 5).

        A credibility-weighted blend of the population mean and the customer's own mean; with
        x = 0 it is the population mean. Non-positive observed spend is used as given.
        """
        self._check_fitted()
        x = np.asarray(frequency, dtype=np.float64)
        m = np.asarray(monetary_value, dtype=np.float64)
        p, q = self.p_, self.q_
        weight = p * x / (p * x + q - 1.0)
        m_used = np.where(x > 0, m, 0.0)
        return (1.0 - weight) * self.population_mean_ + weight * m_used


# --------------------------------------------------------------------------------------------
# CLV
# --------------------------------------------------------------------------------------------


def customer_lifetime_value(
    bg: BetaGeoModel,
    gg: GammaGammaModel,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    monetary_value: ArrayLike,
    horizon_months: int = 12,
    discount_rate_monthly: float = 0.01,
    days_per_month: float = 30.0,
    time_unit_days: float = 1.0,
) -> FloatArray:
    """Discounted expected spend over the next ``horizon_months`` months.

    ``Σ_{m=1..H} (E[Y(m u)] - E[Y((m-1) u)]) · E[Z | x, m] / (1+d)^m`` with ``u`` the month length
    in model time units, as in ``lifetimes.utils._customer_lifetime_value`` (which uses 30 days a
    month, 4.345 weeks a month). ``time_unit_days`` must match the unit the BG/NBD was fitted in.
    """
    if horizon_months < 0:
        raise ValueError("horizon_months must be >= 0")
    if discount_rate_monthly <= -1:
        raise ValueError("discount_rate_monthly must be > -1")
    x = np.asarray(frequency, dtype=np.float64).reshape(-1)
    t_x = np.asarray(recency, dtype=np.float64).reshape(-1)
    age = np.asarray(T, dtype=np.float64).reshape(-1)
    m = np.asarray(monetary_value, dtype=np.float64).reshape(-1)
    if not (x.size == t_x.size == age.size == m.size):
        raise ValueError("frequency, recency, T and monetary_value must have the same length")
    if horizon_months == 0 or x.size == 0:
        return np.zeros(x.size)
    spend = gg.conditional_expected_average_profit(x, m)
    unit = days_per_month / time_unit_days
    months = np.arange(0, horizon_months + 1, dtype=np.float64)
    # E[Y(t)] = P(alive | x, t_x, T) * g(x, T, t): evaluate g on the distinct (x, T) only.
    comp = compress_rfm(x, np.zeros_like(x), age)
    cumulative = bg.expected_purchases_if_alive(
        months[None, :] * unit, comp.frequency[:, None], comp.T[:, None]
    )
    per_month = np.diff(cumulative, axis=1)
    discount = (1.0 + discount_rate_monthly) ** -months[1:]
    discounted = (per_month * discount).sum(axis=1)[comp.inverse]
    return discounted * bg.probability_alive(x, t_x, age) * spend
