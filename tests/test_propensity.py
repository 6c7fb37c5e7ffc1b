"""Propensity training, calibration, scoring, explanations and artifact integrity."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from threadpoolctl import threadpool_limits

from profile_enrichment.errors import ModelFitError, UserError
from profile_enrichment.ml.explain import LinearExplainer
from profile_enrichment.ml.propensity import (
    ArtifactIntegrityError,
    PropensityConfig,
    _fit_candidate,
    _make_candidate,
    load_result,
    save_result,
    score_propensity,
    scoring_columns,
    train_propensity,
)

FEATURES = ["recency_days", "frequency_90d", "monetary_90d", "pages_per_session"]
DATES = ("2025-01-01", "2025-02-01", "2025-03-01")
FAST = PropensityConfig(hgb_max_iter=25)


def make_frame(
    n_customers: int = 300,
    dates: tuple[str, ...] = DATES,
    seed: int = 0,
    interaction: bool = False,
) -> pd.DataFrame:
    """Stacked snapshots shaped like the dbt training frame (null labels included)."""
    rng = np.random.default_rng(seed)
    frames = []
    for date in dates:
        X = rng.normal(size=(n_customers, len(FEATURES)))
        X[rng.random(X.shape) < 0.05] = np.nan
        x = np.nan_to_num(X)
        signal = 3 * x[:, 0] * x[:, 1] if interaction else 1.2 * x[:, 0] - 0.8 * x[:, 1]
        y = rng.random(n_customers) < 1 / (1 + np.exp(-(signal - 0.7)))
        frame = pd.DataFrame(X, columns=FEATURES)
        frame.insert(0, "customer_id", [f"c{i:05d}" for i in range(n_customers)])
        frame.insert(1, "as_of_date", pd.Timestamp(date).date())
        label = pd.array(y, dtype="boolean")
        label[rng.random(n_customers) < 0.05] = pd.NA
        frame["is_churned"] = label
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module", autouse=True)
def _one_openmp_thread():
    """HistGradientBoosting's OpenMP threads crawl when the shared cores are busy."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_frame()


@pytest.fixture(scope="module")
def result(frame):
    return train_propensity(frame, FEATURES, "is_churned", FAST)


@pytest.fixture(scope="module")
def tree_result(frame):
    return train_propensity(
        frame, FEATURES, "is_churned", replace(FAST, candidates=("hist_gradient_boosting",))
    )


@pytest.fixture(scope="module")
def scoring_frame() -> pd.DataFrame:
    return make_frame(n_customers=500, dates=("2025-04-01",), seed=11).drop(columns="is_churned")


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def test_newest_snapshot_is_validation_and_metrics_are_plain(frame, result) -> None:
    labelled = frame[frame["is_churned"].notna()]
    newest = labelled["as_of_date"] == pd.Timestamp(DATES[-1]).date()
    m = result.metrics
    assert m["n_valid"] == int(newest.sum())
    assert m["n_train"] == int((~newest).sum())
    assert m["n_valid_positive"] == int(labelled.loc[newest, "is_churned"].sum())
    assert m["n_train_positive"] == int(labelled.loc[~newest, "is_churned"].sum())
    assert result.valid_as_of_date == DATES[-1]
    assert result.train_as_of_dates == DATES[:-1]
    for key in (
        "roc_auc", "pr_auc", "brier", "top_decile_lift", "top_decile_capture", "base_rate",
        "logistic_roc_auc", "logistic_pr_auc",
        "hist_gradient_boosting_roc_auc", "hist_gradient_boosting_pr_auc",
    ):  # fmt: skip
        assert type(m[key]) is float, key
    assert m["chosen_candidate"] in ("logistic", "hist_gradient_boosting")
    assert all(type(v) in (float, int, str) for v in m.values())
    assert 0.7 < m["roc_auc"] < 1.0 and 0 < m["brier"] < 0.25


def test_validation_predictions_are_the_rows_behind_the_metrics(frame, result) -> None:
    """The report draws its curves from these rows, so they must reproduce the metrics."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    rows = result.validation_predictions
    labelled = frame[frame["is_churned"].notna()]
    newest = labelled[labelled["as_of_date"] == pd.Timestamp(DATES[-1]).date()]
    assert list(rows.columns) == ["customer_id", "is_positive", "probability"]
    assert len(rows) == result.metrics["n_valid"]
    assert sorted(rows["customer_id"]) == sorted(newest["customer_id"].astype(str))
    truth = newest.set_index(newest["customer_id"].astype(str))["is_churned"].astype(bool)
    assert (rows["is_positive"].to_numpy() == truth.loc[rows["customer_id"]].to_numpy()).all()
    y, p = rows["is_positive"].to_numpy(), rows["probability"].to_numpy()
    assert roc_auc_score(y, p) == pytest.approx(result.metrics["roc_auc"], abs=1e-12)
    assert brier_score_loss(y, p) == pytest.approx(result.metrics["brier"], abs=1e-12)


def test_final_model_is_fitted_on_older_snapshots_only(frame, result) -> None:
    labelled = frame[frame["is_churned"].notna()].sort_values(
        ["as_of_date", "customer_id"], kind="mergesort"
    )
    older = labelled[labelled["as_of_date"] < pd.Timestamp(DATES[-1]).date()]
    X = older[FEATURES].to_numpy(dtype=float, na_value=np.nan)
    y = older["is_churned"].astype(int).to_numpy()
    again = clone(result.model).fit(X, y)
    np.testing.assert_allclose(
        again.decision_function(X), result.model.decision_function(X), rtol=1e-9, atol=1e-12
    )
    X_all = labelled[FEATURES].to_numpy(dtype=float, na_value=np.nan)
    with_valid = clone(result.model).fit(X_all, labelled["is_churned"].astype(int).to_numpy())
    assert not np.allclose(with_valid.decision_function(X), result.model.decision_function(X))


def test_logistic_fitted_step_by_step_equals_pipeline_fit() -> None:
    """_fit_candidate fits the median imputer on the column medians (np.nanmedian) instead of
    through Pipeline.fit (numpy.ma): the fitted pipeline must be the same, bit for bit, with
    missing values, an all-missing column and an even number of rows (medians of two)."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(400, 5))
    X[rng.random(X.shape) < 0.2] = np.nan
    X[:, 3] = np.nan
    X[:, 4] = np.round(X[:, 4], 1)  # ties
    y = (rng.random(400) < 0.3).astype(np.int64)
    config = PropensityConfig()
    fast = _fit_candidate("logistic", config, X, y)
    slow = _make_candidate("logistic", config).fit(X, y)
    for name in ("impute", "scale", "model"):
        for attr, value in vars(slow.named_steps[name]).items():
            other = vars(fast.named_steps[name])[attr]
            if isinstance(value, np.ndarray):
                assert np.array_equal(value, other, equal_nan=True), (name, attr)
    assert np.array_equal(fast.named_steps["impute"].statistics_[3:4], [0.0])
    assert np.array_equal(fast.decision_function(X), slow.decision_function(X))


def test_selection_metric_picks_the_better_candidate() -> None:
    interaction = make_frame(n_customers=500, interaction=True, seed=3)
    res = train_propensity(interaction, FEATURES, "is_churned", FAST)
    m = res.metrics
    assert m["hist_gradient_boosting_pr_auc"] > m["logistic_pr_auc"]
    assert res.candidate == "hist_gradient_boosting"
    assert res.explain_method == "tree_shap_path_dependent"


def test_training_is_deterministic(frame, result, scoring_frame) -> None:
    again = train_propensity(frame.sample(frac=1.0, random_state=1), FEATURES, "is_churned", FAST)
    assert again.metrics == result.metrics
    pd.testing.assert_frame_equal(
        score_propensity(again, scoring_frame), score_propensity(result, scoring_frame)
    )


def test_single_as_of_date_is_a_fit_error(frame) -> None:
    one = frame[frame["as_of_date"] == pd.Timestamp(DATES[0]).date()]
    with pytest.raises(ModelFitError, match="one as-of date"):
        train_propensity(one, FEATURES, "is_churned", replace(FAST, min_rows=50))


def test_empty_frame_is_a_fit_error(frame) -> None:
    with pytest.raises(ModelFitError, match="0 labelled rows"):
        train_propensity(frame.iloc[:0], FEATURES, "is_churned", FAST)


def test_min_rows_is_configurable(frame) -> None:
    with pytest.raises(ModelFitError, match="need at least 5000"):
        train_propensity(frame, FEATURES, "is_churned", replace(FAST, min_rows=5000))


def test_validation_needs_both_classes(frame) -> None:
    broken = frame.copy()
    newest = broken["as_of_date"] == pd.Timestamp(DATES[-1]).date()
    broken.loc[newest, "is_churned"] = False
    with pytest.raises(ModelFitError, match="validation snapshot"):
        train_propensity(broken, FEATURES, "is_churned", FAST)


def test_missing_feature_column_is_a_user_error(frame) -> None:
    with pytest.raises(UserError, match="lacks columns"):
        train_propensity(frame, [*FEATURES, "nope"], "is_churned", FAST)


@pytest.mark.parametrize(
    "change",
    [
        {"selection_metric": "accuracy"},
        {"calibration": "temperature"},
        {"candidates": ("random_forest",)},
        {"bucket_high": 20, "bucket_medium": 30},
    ],
)
def test_invalid_config_is_a_user_error(change) -> None:
    with pytest.raises(UserError):
        PropensityConfig(**change)


def test_isotonic_and_roc_auc_options_train(frame) -> None:
    cfg = replace(FAST, calibration="isotonic", selection_metric="roc_auc", refit_on_all=True)
    res = train_propensity(frame, FEATURES, "is_churned", cfg)
    assert res.metrics["calibration"] == "isotonic" and res.metrics["refit_on_all"] == 1
    assert res.metrics["n_train"] + res.metrics["n_valid"] == int(frame["is_churned"].notna().sum())


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------


def test_score_output_shape_and_ranges(result, scoring_frame) -> None:
    out = score_propensity(result, scoring_frame)
    assert list(out.columns) == scoring_columns(3)
    assert out["customer_id"].tolist() == scoring_frame["customer_id"].tolist()
    p = out["probability"].to_numpy()
    assert ((p >= 0) & (p <= 1)).all()
    np.testing.assert_array_equal(out["score"].to_numpy(), np.rint(100 * p).astype(int))
    assert out["percentile"].between(1, 100).all() and out["percentile"].max() == 100
    expected_bucket = np.where(
        out["score"] >= 70, "high", np.where(out["score"] >= 30, "medium", "low")
    )
    assert out["bucket"].tolist() == expected_bucket.tolist()
    # higher probability never gets a lower percentile
    ordered = out.sort_values("probability", kind="mergesort")
    assert ordered["percentile"].is_monotonic_increasing
    for k in (1, 2, 3):
        assert set(out[f"factor_{k}_code"].dropna()) <= set(FEATURES)
        assert set(out[f"factor_{k}_importance"].dropna()) <= {"low", "medium", "high"}
        assert set(out[f"factor_{k}_direction"].dropna()) <= {"increases", "decreases"}


def test_calibrated_probability_matches_the_calibrator(result, scoring_frame) -> None:
    X = scoring_frame[FEATURES].to_numpy(dtype=float, na_value=np.nan)
    out = score_propensity(result, scoring_frame)
    np.testing.assert_allclose(
        out["probability"].to_numpy(), result.calibrator.predict_proba(X)[:, 1], atol=1e-12
    )


def test_percentile_ties_are_shared_and_order_independent(result, scoring_frame) -> None:
    doubled = pd.concat([scoring_frame.iloc[:50], scoring_frame.iloc[:50]], ignore_index=True)
    out = score_propensity(result, doubled)
    np.testing.assert_array_equal(out["percentile"][:50], out["percentile"][50:])
    reversed_out = score_propensity(result, doubled.iloc[::-1].reset_index(drop=True))
    np.testing.assert_array_equal(
        reversed_out["percentile"].to_numpy()[::-1], out["percentile"].to_numpy()
    )


def test_linear_factors_are_the_largest_exact_contributions(result, scoring_frame) -> None:
    linear = train_propensity(
        make_frame(), FEATURES, "is_churned", replace(FAST, candidates=("logistic",))
    )
    assert linear.explain_method == "linear_exact"
    X = scoring_frame[FEATURES].to_numpy(dtype=float, na_value=np.nan)
    contrib = LinearExplainer(linear.model, linear.linear_reference).explain(X).values
    out = score_propensity(linear, scoring_frame)
    top = np.argmax(np.abs(contrib), axis=1)
    assert out["factor_1_code"].tolist() == [FEATURES[i] for i in top]
    c1 = contrib[np.arange(len(X)), top]
    assert out["factor_1_direction"].tolist() == np.where(c1 > 0, "increases", "decreases").tolist()
    raw = X[np.arange(len(X)), top]
    np.testing.assert_array_equal(out["factor_1_value"].to_numpy(), raw)  # NaN stays NaN


def test_tree_factors_and_local_accuracy(tree_result, scoring_frame) -> None:
    X = scoring_frame[FEATURES].to_numpy(dtype=float, na_value=np.nan)
    exp = tree_result.explainer().explain(X)
    np.testing.assert_allclose(exp.margin(), tree_result.margin(X), atol=1e-6)
    assert exp.expected_value == pytest.approx(tree_result.expected_value)
    out = score_propensity(tree_result, scoring_frame)
    top = np.argmax(np.abs(exp.values), axis=1)
    assert out["factor_1_code"].tolist() == [FEATURES[i] for i in top]


def test_directions_follow_the_calibrated_probability_when_the_relation_flips() -> None:
    """If the newest snapshot reverses the model's relation, the calibration decreases with
    the margin; "increases" must still mean "raises the published probability"."""
    flipped = make_frame(n_customers=400, seed=8)
    newest = flipped["as_of_date"] == pd.Timestamp(DATES[-1]).date()
    flipped.loc[newest, "recency_days"] *= -1
    flipped.loc[newest, "frequency_90d"] *= -1
    res = train_propensity(flipped, FEATURES, "is_churned", replace(FAST, candidates=("logistic",)))
    assert res.calibration_sign == -1
    X = flipped.loc[newest, FEATURES].to_numpy(dtype=float, na_value=np.nan)
    margin = res.margin(X)
    p = res.probability_from_margin(margin)
    assert np.corrcoef(margin, p)[0, 1] < 0
    out = score_propensity(res, flipped.loc[newest].drop(columns="is_churned"))
    contrib = res.explainer().explain(X).values
    top = np.argmax(np.abs(contrib), axis=1)
    c1 = contrib[np.arange(len(X)), top]
    assert out["factor_1_direction"].tolist() == np.where(c1 < 0, "increases", "decreases").tolist()


def test_fewer_features_than_factor_slots_gives_null_slots(frame, scoring_frame) -> None:
    res = train_propensity(frame, FEATURES[:2], "is_churned", FAST)
    out = score_propensity(res, scoring_frame)
    assert out["factor_3_code"].isna().all() and out["factor_3_value"].isna().all()
    assert out["factor_3_importance"].isna().all() and out["factor_3_direction"].isna().all()
    assert out["factor_1_code"].notna().all()


def test_empty_scoring_frame_gives_empty_output(result, scoring_frame) -> None:
    out = score_propensity(result, scoring_frame.iloc[:0])
    assert out.empty and list(out.columns) == scoring_columns(3)


def test_score_requires_the_feature_columns(result, scoring_frame) -> None:
    with pytest.raises(UserError, match="monetary_90d"):
        score_propensity(result, scoring_frame.drop(columns="monetary_90d"))


# --------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path, result, scoring_frame) -> None:
    path = tmp_path / "models" / "churn.pkl"
    digest = save_result(result, path)
    loaded = load_result(path, digest.upper())
    pd.testing.assert_frame_equal(
        score_propensity(loaded, scoring_frame), score_propensity(result, scoring_frame)
    )


def test_load_refuses_a_modified_file(tmp_path, result) -> None:
    path = tmp_path / "churn.pkl"
    digest = save_result(result, path)
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(ArtifactIntegrityError, match="refusing to load"):
        load_result(path, digest)


def test_load_refuses_a_wrong_or_malformed_digest(tmp_path, result) -> None:
    path = tmp_path / "churn.pkl"
    save_result(result, path)
    with pytest.raises(ArtifactIntegrityError, match="registry expects"):
        load_result(path, "0" * 64)
    with pytest.raises(ArtifactIntegrityError, match="64-hex"):
        load_result(path, "")


def test_load_missing_file_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_result(tmp_path / "nope.pkl", "a" * 64)
