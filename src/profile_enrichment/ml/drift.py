"""Feature drift between the training population and the population being scored (PSI).

The Population Stability Index compares two distributions over the same bins::

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

where ``e_i`` / ``a_i`` are the shares of the *expected* (training) and *actual* (scoring)
values that fall in bin ``i``. Shares of 0 are replaced by ``epsilon`` (default 1e-4) so that
an empty bin gives a large but finite term; a bin empty on both sides contributes exactly 0.
Rule of thumb: < 0.1 stable, 0.1-0.2 moderate shift, > 0.2 significant shift.

Bins (numeric features) come from ``expected`` only:

* cut points are the distinct quantiles of the finite expected values at
  ``0, 1/bins, ..., (bins-1)/bins`` (``numpy.quantile``, linear interpolation); duplicate
  quantiles (ties, point masses such as "0 orders") collapse, so there may be fewer bins;
* interior bins are left-closed, ``[cut_j, cut_j+1)``, the last one ``[cut_last, max]``;
* two outer bins catch actual values *below the expected minimum* and *above the expected
  maximum* (empty in ``expected``), so a constant feature that moves, or values outside the
  training range, still register;
* missing values (NaN / NA, and +-inf) form their own bin.

Non-numeric features are compared per category (each expected category, one bin for unseen
categories, one for missing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from profile_enrichment.errors import UserError

EPSILON = 1e-4
"""Share used in place of 0 for empty bins."""

DRIFT_COLUMNS = ("feature", "psi", "is_drifted", "train_mean", "score_mean", "n_train", "n_score")


def _as_float(values: ArrayLike | pd.Series) -> np.ndarray:
    """1-D float64 array; NA / None / +-inf become NaN."""
    if isinstance(values, pd.Series):
        if pd.api.types.is_datetime64_any_dtype(values):
            if values.dt.tz is not None:
                values = values.dt.tz_convert("UTC").dt.tz_localize(None)
            missing = values.isna().to_numpy()
            arr = values.to_numpy(dtype="datetime64[ns]").astype("int64").astype("float64")
            arr[missing] = np.nan
            return arr
        arr = values.to_numpy(dtype="float64", na_value=np.nan)
    else:
        arr = np.asarray(values, dtype="float64").ravel()
    arr = arr.astype("float64", copy=True)
    arr[~np.isfinite(arr)] = np.nan
    return arr


def quantile_cuts(expected: ArrayLike, bins: int = 10) -> np.ndarray:
    """Distinct cut points (left bin edges, starting at the minimum) from ``expected``."""
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    e = _as_float(expected)
    finite = e[~np.isnan(e)]
    if finite.size == 0:
        return np.empty(0, dtype="float64")
    return np.unique(np.quantile(finite, np.linspace(0.0, 1.0, int(bins) + 1)[:-1]))


def _bin_counts(values: np.ndarray, cuts: np.ndarray, upper: float) -> np.ndarray:
    """Counts per bin: [below min, interior..., above max, missing]."""
    n_bins = len(cuts) + 3
    idx = np.searchsorted(cuts, values, side="right")  # NaN sorts last -> fixed below
    idx[values > upper] = len(cuts) + 1
    idx[np.isnan(values)] = len(cuts) + 2
    return np.bincount(idx, minlength=n_bins)


def _psi_from_counts(e_counts: np.ndarray, a_counts: np.ndarray, epsilon: float) -> float:
    e = np.maximum(e_counts / e_counts.sum(), epsilon)
    a = np.maximum(a_counts / a_counts.sum(), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def population_stability_index(
    expected: ArrayLike, actual: ArrayLike, bins: int = 10, *, epsilon: float = EPSILON
) -> float:
    """PSI of ``actual`` against ``expected`` on quantile bins of ``expected`` (see module doc).

    Returns NaN when either side is empty (nothing to compare, e.g. ``dbt build --empty``).
    """
    cuts = quantile_cuts(expected, bins)
    e = _as_float(expected)
    a = _as_float(actual)
    if e.size == 0 or a.size == 0:
        return float("nan")
    if cuts.size == 0:  # expected is all missing: compare "present" vs "missing" only
        e_counts = np.array([np.sum(~np.isnan(e)), np.sum(np.isnan(e))])
        a_counts = np.array([np.sum(~np.isnan(a)), np.sum(np.isnan(a))])
        return _psi_from_counts(e_counts, a_counts, epsilon)
    upper = float(np.nanmax(e))
    return _psi_from_counts(_bin_counts(e, cuts, upper), _bin_counts(a, cuts, upper), epsilon)


def categorical_psi(expected: pd.Series, actual: pd.Series, *, epsilon: float = EPSILON) -> float:
    """PSI over the categories of ``expected``, plus one bin for unseen categories and one
    for missing values. NaN when either side is empty."""
    if len(expected) == 0 or len(actual) == 0:
        return float("nan")
    e = expected.astype("object").where(expected.notna(), None)
    a = actual.astype("object").where(actual.notna(), None)
    categories = sorted({str(v) for v in e if v is not None})
    position = {c: i for i, c in enumerate(categories)}
    unseen, missing = len(categories), len(categories) + 1

    def counts(values: pd.Series) -> np.ndarray:
        idx = [missing if v is None else position.get(str(v), unseen) for v in values]
        return np.bincount(np.asarray(idx, dtype=np.int64), minlength=len(categories) + 2)

    return _psi_from_counts(counts(e), counts(a), epsilon)


def _is_numeric(series: pd.Series) -> bool:
    return (
        pd.api.types.is_numeric_dtype(series)
        or pd.api.types.is_bool_dtype(series)
        or pd.api.types.is_datetime64_any_dtype(series)
    )


def _nanmean(arr: np.ndarray) -> float:
    # math.fsum is exactly rounded, so the mean does not depend on the order the warehouse
    # returned the rows in (numpy's pairwise sum does, in the last bits): reruns are identical.
    finite = arr[~np.isnan(arr)]
    return math.fsum(finite.tolist()) / finite.size if finite.size else float("nan")


def feature_drift(
    train_frame: pd.DataFrame,
    score_frame: pd.DataFrame,
    feature_cols: Sequence[str],
    threshold: float = 0.2,
    bins: int = 10,
) -> pd.DataFrame:
    """PSI per feature between the training and the scoring population.

    Returns ``DataFrame(feature, psi, is_drifted, train_mean, score_mean, n_train, n_score)``
    sorted by feature name. ``is_drifted`` is ``psi > threshold`` (False when PSI is NaN,
    i.e. one side is empty). Means ignore missing values (NaN for non-numeric features);
    ``n_train`` / ``n_score`` count all rows, missing included (missing is a PSI bin).
    Datetime features are compared as timestamps, booleans as 0/1.
    """
    features = sorted(dict.fromkeys(feature_cols))
    for name, frame in (("training", train_frame), ("scoring", score_frame)):
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise UserError(
                f"drift: feature columns missing from the {name} frame: {', '.join(missing)}",
                hint="score with the same feature list the model was trained on",
            )
    rows = []
    for feature in features:
        train, score = train_frame[feature], score_frame[feature]
        if _is_numeric(train) and _is_numeric(score):
            t, s = _as_float(train), _as_float(score)
            psi = population_stability_index(t, s, bins)
            train_mean, score_mean = _nanmean(t), _nanmean(s)
        else:
            psi = categorical_psi(train, score)
            train_mean = score_mean = float("nan")
        rows.append(
            {
                "feature": feature,
                "psi": psi,
                "is_drifted": bool(psi > threshold),  # NaN > x is False
                "train_mean": train_mean,
                "score_mean": score_mean,
                "n_train": len(train),
                "n_score": len(score),
            }
        )
    out = pd.DataFrame(rows, columns=list(DRIFT_COLUMNS))
    return out.astype(
        {
            "feature": "str",
            "psi": "float64",
            "is_drifted": "bool",
            "train_mean": "float64",
            "score_mean": "float64",
            "n_train": "int64",
            "n_score": "int64",
        }
    )


__all__ = [
    "DRIFT_COLUMNS",
    "EPSILON",
    "categorical_psi",
    "feature_drift",
    "population_stability_index",
    "quantile_cuts",
]
