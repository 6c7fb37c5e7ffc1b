"""Guardrails: refuse to train on data that cannot give an honest model, refuse to publish
a model that is worse than what is already in production.

Both return decisions with short reasons instead of raising, so the dbt model can record
*why* a run kept the champion in the model registry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import rankdata

__all__ = ["GuardrailReport", "check_training_data", "publish_decision", "single_feature_auc"]


@dataclass
class GuardrailReport:
    """The result of :func:`check_training_data`.

    ``reasons`` holds machine-readable codes (``too_few_rows``, ``single_class``,
    ``minority_class_too_small``, ``no_usable_features``, ``missing_feature:<name>``,
    ``label_leak:<name>``). ``messages`` holds one human sentence per reason, with the
    numbers. ``dropped_features`` are constant or all-null features; they are left out of
    training but do not block it. ``usable_features`` is what to train on.
    """

    ok: bool
    reasons: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    dropped_features: list[str] = field(default_factory=list)
    usable_features: list[str] = field(default_factory=list)
    n_rows: int = 0
    n_positive: int = 0


def single_feature_auc(x: np.ndarray, y: np.ndarray) -> float:
    """How well one feature alone separates the label: ROC AUC, oriented to be >= 0.5.

    Missing values are tried both below and above every observed value, and the better
    separation is kept, so a label hidden in *missingness* is caught too. Ties count half
    (Mann-Whitney). Returns NaN if ``y`` has a single class.
    """
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    x = np.asarray(x, dtype=np.float64)
    nan = np.isnan(x)
    best = 0.5
    fills = (-np.inf, np.inf) if nan.any() else (0.0,)
    for fill in fills:
        ranks = rankdata(np.where(nan, fill, x))
        auc = (ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        best = max(best, auc, 1.0 - auc)
    return float(best)


def check_training_data(
    frame: pd.DataFrame,
    feature_cols: Sequence[str],
    label_col: str,
    min_rows: int,
    *,
    leak_auc: float = 0.999,
    min_class_rows: int = 10,
) -> GuardrailReport:
    """Check the training frame before fitting; see :class:`GuardrailReport` for the codes.

    Only rows with a non-null label count. Refused (``ok=False``) when:

    * there are fewer than ``min_rows`` labelled rows (``too_few_rows``);
    * the label has a single class (``single_class``), or its rarer class has fewer than
      ``min_class_rows`` rows (``minority_class_too_small``). With a handful of positives,
      no metric and no leak test means anything;
    * a listed feature is not in the frame (``missing_feature:<name>``). The dbt YAML and
      the mart disagree, which is a pipeline bug, not something to train around;
    * no feature is left after dropping constant and all-null ones (``no_usable_features``);
    * a feature leaks the label (``label_leak:<name>``): it equals the label or its
      negation, or on its own it separates the classes with AUC >= ``leak_auc``. A real
      behavioural signal is never that clean; an outcome-window column is.
    """
    report = GuardrailReport(ok=False)
    if label_col not in frame.columns:
        report.reasons.append(f"missing_label:{label_col}")
        report.messages.append(f"the label column {label_col!r} is not in the training frame")
        return report

    labelled = frame.loc[frame[label_col].notna()]
    y = labelled[label_col].astype("float64").to_numpy()
    report.n_rows = int(y.size)
    report.n_positive = int((y == 1).sum())
    n_negative = report.n_rows - report.n_positive

    if report.n_rows < min_rows:
        report.reasons.append("too_few_rows")
        report.messages.append(f"{report.n_rows} labelled rows, at least {min_rows} needed")
    if report.n_rows > 0 and min(report.n_positive, n_negative) == 0:
        report.reasons.append("single_class")
        report.messages.append(
            f"every labelled row has {label_col} = {bool(report.n_positive)}; nothing to learn"
        )
    elif report.n_rows > 0 and min(report.n_positive, n_negative) < min_class_rows:
        report.reasons.append("minority_class_too_small")
        report.messages.append(
            f"{report.n_positive} positive and {n_negative} negative rows; the rarer class "
            f"needs at least {min_class_rows}"
        )

    for col in feature_cols:
        if col not in frame.columns:
            report.reasons.append(f"missing_feature:{col}")
            report.messages.append(f"feature {col!r} is listed but not in the training frame")
    present = [c for c in feature_cols if c in frame.columns]

    can_test_leaks = report.n_rows > 0 and min(report.n_positive, n_negative) > 0
    for col in present:
        x = labelled[col].to_numpy(dtype=np.float64, na_value=np.nan)
        if x.size == 0:  # nothing to judge; too_few_rows already refuses
            report.usable_features.append(col)
            continue
        if pd.Series(x).nunique(dropna=False) <= 1:
            report.dropped_features.append(col)
            continue
        report.usable_features.append(col)
        if not can_test_leaks:
            continue
        if np.array_equal(x, y) or np.array_equal(x, 1.0 - y):
            report.reasons.append(f"label_leak:{col}")
            report.messages.append(f"feature {col!r} is identical to {label_col} (or its negation)")
            continue
        auc = single_feature_auc(x, y)
        if auc >= leak_auc:
            report.reasons.append(f"label_leak:{col}")
            report.messages.append(
                f"feature {col!r} alone separates {label_col} with AUC {auc:.4f} "
                f"(>= {leak_auc}); it likely encodes the outcome"
            )

    if present and not report.usable_features:
        report.reasons.append("no_usable_features")
        report.messages.append(
            f"all {len(present)} features are constant or entirely null: "
            f"{', '.join(report.dropped_features)}"
        )
    elif not feature_cols:
        report.reasons.append("no_usable_features")
        report.messages.append("no feature columns were given")

    report.ok = not report.reasons
    return report


def publish_decision(
    candidate_metrics: Mapping[str, float | int | str],
    champion_metrics: Mapping[str, float | int | str] | None,
    metric: str = "roc_auc",
    floor: float = 0.6,
    tolerance: float = 0.02,
) -> tuple[bool, str]:
    """Publish the candidate? Returns ``(publish, reason)``.

    Not published if its ``metric`` is missing, below ``floor``, or worse than the
    champion's by more than ``tolerance``. A first model (no champion, or a champion
    without the metric) is published if it clears the floor. The reason is one short
    sentence with the numbers, so it can be recorded in the registry as is. ROC AUC is the
    default because, unlike PR AUC, it does not move with the base rate, which changes
    from run to run.
    """
    value = _as_float(candidate_metrics.get(metric))
    if value is None:
        return False, f"not published: the candidate has no usable {metric}"
    if value < floor:
        return False, f"not published: {metric} {value:.3f} is below the floor {floor:.3f}"
    champion = _as_float(champion_metrics.get(metric)) if champion_metrics else None
    if champion is None:
        what = "first model" if not champion_metrics else f"champion has no {metric}"
        return True, f"published ({what}): {metric} {value:.3f} clears the floor {floor:.3f}"
    gap = champion - value
    if gap > tolerance + 1e-12:
        return False, (
            f"not published: {metric} {value:.3f} is {gap:.3f} below the champion's "
            f"{champion:.3f} (tolerance {tolerance:.3f})"
        )
    if gap > 0:
        return True, (
            f"published: {metric} {value:.3f} is within {tolerance:.3f} of the champion's "
            f"{champion:.3f}"
        )
    return True, f"published: {metric} {value:.3f} >= the champion's {champion:.3f}"


def _as_float(value: object) -> float | None:
    """A finite float, or None for missing, non-numeric or NaN values."""
    if value is None or isinstance(value, bool | str):
        return None
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
