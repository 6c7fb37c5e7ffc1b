"""Guardrails: one test per refusal and per pass."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from profile_enrichment.ml.guardrails import (
    check_training_data,
    publish_decision,
    single_feature_auc,
)

FEATURES = ["recency_days", "frequency_90d", "monetary_90d"]


def _frame(n: int = 300, seed: int = 0, positive_rate: float = 0.3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({c: rng.normal(size=n) for c in FEATURES})
    frame.insert(0, "customer_id", [f"c{i}" for i in range(n)])
    # noisy signal: informative but far from separating
    logit = np.log(positive_rate / (1 - positive_rate)) + frame["recency_days"].to_numpy()
    frame["is_churned"] = pd.array(rng.random(n) < 1 / (1 + np.exp(-logit)), dtype="boolean")
    return frame


def _check(frame: pd.DataFrame, features=FEATURES, min_rows: int = 200):
    return check_training_data(frame, features, "is_churned", min_rows)


# --------------------------------------------------------------------------------------
# check_training_data
# --------------------------------------------------------------------------------------


def test_clean_data_passes() -> None:
    report = _check(_frame())
    assert report.ok, report.messages
    assert report.reasons == [] and report.dropped_features == []
    assert report.usable_features == FEATURES
    assert report.n_rows == 300


def test_null_labels_are_not_counted() -> None:
    frame = _frame(n=300)
    frame.loc[:119, "is_churned"] = pd.NA
    report = _check(frame)
    assert report.n_rows == 180
    assert report.reasons == ["too_few_rows"]
    assert "180 labelled rows" in report.messages[0]


def test_too_few_rows_refused() -> None:
    report = _check(_frame(n=50))
    assert not report.ok and report.reasons == ["too_few_rows"]


def test_empty_frame_refused_without_crashing() -> None:
    report = _check(_frame().iloc[:0])
    assert not report.ok and report.reasons == ["too_few_rows"]


def test_single_class_refused() -> None:
    frame = _frame()
    frame["is_churned"] = False
    report = _check(frame)
    assert not report.ok and report.reasons == ["single_class"]


def test_minority_class_too_small_refused() -> None:
    frame = _frame()
    frame["is_churned"] = pd.array([i < 5 for i in range(len(frame))], dtype="boolean")
    report = _check(frame)
    assert report.reasons == ["minority_class_too_small"]


def test_constant_and_all_null_features_are_dropped_individually_but_pass() -> None:
    frame = _frame()
    frame["constant"] = 3.0
    frame["empty"] = np.nan
    report = _check(frame, [*FEATURES, "constant", "empty"])
    assert report.ok, report.messages
    assert report.dropped_features == ["constant", "empty"]
    assert report.usable_features == FEATURES


def test_no_usable_features_refused() -> None:
    frame = _frame()
    frame["constant"] = 3.0
    frame["empty"] = pd.array([pd.NA] * len(frame), dtype="Float64")
    report = _check(frame, ["constant", "empty"])
    assert not report.ok and report.reasons == ["no_usable_features"]
    assert report.dropped_features == ["constant", "empty"]


def test_missing_feature_refused() -> None:
    report = _check(_frame(), [*FEATURES, "not_in_mart"])
    assert report.reasons == ["missing_feature:not_in_mart"]


def test_feature_identical_to_label_is_a_leak() -> None:
    frame = _frame()
    frame["days_to_churn_flag"] = frame["is_churned"].astype("float64")
    report = _check(frame, [*FEATURES, "days_to_churn_flag"])
    assert not report.ok and report.reasons == ["label_leak:days_to_churn_flag"]
    assert "identical" in report.messages[0]


def test_feature_equal_to_negated_label_is_a_leak() -> None:
    frame = _frame()
    frame["is_active"] = ~frame["is_churned"]
    report = _check(frame, [*FEATURES, "is_active"])
    assert report.reasons == ["label_leak:is_active"]


def test_perfectly_separating_feature_is_a_leak() -> None:
    frame = _frame()
    churned = frame["is_churned"].to_numpy(dtype=bool)
    rng = np.random.default_rng(1)
    frame["days_since_cancel"] = np.where(
        churned, rng.uniform(10, 20, len(frame)), rng.uniform(0, 5, len(frame))
    )
    report = _check(frame, [*FEATURES, "days_since_cancel"])
    assert report.reasons == ["label_leak:days_since_cancel"]
    assert "AUC 1.0000" in report.messages[0]


def test_label_hidden_in_missingness_is_a_leak() -> None:
    frame = _frame()
    churned = frame["is_churned"].to_numpy(dtype=bool)
    frame["cancel_reason_code"] = np.where(churned, np.nan, 1.0 + np.arange(len(frame)) % 3)
    report = _check(frame, [*FEATURES, "cancel_reason_code"])
    assert report.reasons == ["label_leak:cancel_reason_code"]


def test_strong_but_imperfect_feature_is_not_a_leak() -> None:
    frame = _frame()
    churned = frame["is_churned"].to_numpy(dtype=bool)
    rng = np.random.default_rng(2)
    frame["strong"] = churned * 2.0 + rng.normal(size=len(frame))
    report = _check(frame, [*FEATURES, "strong"])
    assert report.ok, report.messages


def test_single_feature_auc_is_oriented_and_tie_aware() -> None:
    y = np.array([0, 0, 1, 1])
    assert single_feature_auc(np.array([4.0, 3.0, 2.0, 1.0]), y) == 1.0
    assert single_feature_auc(np.array([1.0, 1.0, 1.0, 1.0]), y) == 0.5
    assert np.isnan(single_feature_auc(np.array([1.0, 2.0]), np.array([1, 1])))


# --------------------------------------------------------------------------------------
# publish_decision
# --------------------------------------------------------------------------------------


def test_first_model_above_floor_is_published() -> None:
    publish, reason = publish_decision({"roc_auc": 0.71}, None)
    assert publish
    assert "first model" in reason and "0.710" in reason and "0.600" in reason


def test_first_model_below_floor_is_not_published() -> None:
    publish, reason = publish_decision({"roc_auc": 0.55}, None)
    assert not publish
    assert "0.550" in reason and "below the floor 0.600" in reason


def test_candidate_below_floor_is_not_published_even_if_better_than_champion() -> None:
    publish, _ = publish_decision({"roc_auc": 0.58}, {"roc_auc": 0.52})
    assert not publish


def test_much_worse_than_champion_is_not_published() -> None:
    publish, reason = publish_decision({"roc_auc": 0.70}, {"roc_auc": 0.75})
    assert not publish
    assert "0.050 below the champion's 0.750" in reason and "tolerance 0.020" in reason


def test_slightly_worse_within_tolerance_is_published() -> None:
    publish, reason = publish_decision({"roc_auc": 0.74}, {"roc_auc": 0.75})
    assert publish and "within 0.020" in reason


def test_exactly_at_tolerance_is_published() -> None:
    publish, _ = publish_decision({"roc_auc": 0.73}, {"roc_auc": 0.75})
    assert publish


def test_better_than_champion_is_published() -> None:
    publish, reason = publish_decision({"roc_auc": 0.80}, {"roc_auc": 0.75})
    assert publish and "0.800 >= the champion's 0.750" in reason


@pytest.mark.parametrize("bad", [None, float("nan"), "0.8", True])
def test_missing_or_unusable_metric_is_not_published(bad) -> None:
    metrics = {} if bad is None else {"roc_auc": bad}
    publish, reason = publish_decision(metrics, {"roc_auc": 0.7})
    assert not publish and "no usable roc_auc" in reason


def test_champion_without_the_metric_counts_as_first_model() -> None:
    publish, reason = publish_decision({"roc_auc": 0.7}, {"pr_auc": 0.4})
    assert publish and "champion has no roc_auc" in reason


def test_other_metric_floor_and_tolerance() -> None:
    assert publish_decision({"pr_auc": 0.31}, {"pr_auc": 0.40}, "pr_auc", 0.2, 0.1) == (
        True,
        "published: pr_auc 0.310 is within 0.100 of the champion's 0.400",
    )
