"""The models, built by a real `profile-enrichment run` on generated data, are good and complete."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import query


def _registry(warehouse: Path) -> dict[str, dict]:
    rows = query(
        warehouse,
        "select model_name, status, metrics_json, params_json, features_json "
        "from model_registry where status = 'champion'",
    )
    return {
        name: {
            "status": status,
            "metrics": json.loads(metrics),
            "params": json.loads(params),
            "features": json.loads(features),
        }
        for name, status, metrics, params, features in rows
    }


def test_every_model_has_a_champion(built_warehouse: Path) -> None:
    assert set(_registry(built_warehouse)) == {"churn", "conversion", "clv", "segments"}


def test_churn_ranks_well_on_generated_data(built_warehouse: Path) -> None:
    """The issue's bar: churn ROC AUC at least 0.75 on generated data (cross-fitted, time-split)."""
    metrics = _registry(built_warehouse)["churn"]["metrics"]
    assert metrics["roc_auc"] >= 0.75, metrics
    assert metrics["n_train"] > 0 and metrics["n_valid"] > 0
    assert 0 < metrics["base_rate"] < 1
    for key in ("pr_auc", "brier", "top_decile_lift", "top_decile_capture"):
        assert key in metrics, key


def test_clv_ranking_against_realized_revenue_is_reported(built_warehouse: Path) -> None:
    clv = _registry(built_warehouse)["clv"]
    assert {"r", "alpha", "a", "b", "p", "q", "gamma", "time_unit"} <= set(clv["params"])
    metrics = clv["metrics"]
    rho = metrics.get("holdout_spearman_clv_vs_future_revenue")
    if rho is None:
        # This small data set has too little history before its only matured CLV snapshot for
        # BG/NBD to be identified there: the registry must say so rather than stay silent.
        assert "not identified" in metrics.get("holdout_error", ""), metrics
    else:
        assert rho > 0.2, f"CLV should rank future revenue at least weakly: Spearman {rho}"


def test_feature_lists_come_from_the_yaml_tags(built_warehouse: Path) -> None:
    tagged = {
        r[0]
        for r in query(built_warehouse, "select column_name from feature_catalog where is_feature")
    }
    churn_features = set(_registry(built_warehouse)["churn"]["features"])
    assert churn_features == tagged
    assert not churn_features & {"customer_id", "as_of_date", "is_churned", "is_converted"}


def test_profile_insights_has_one_row_per_customer_with_every_model(built_warehouse: Path) -> None:
    (customers,) = query(built_warehouse, "select count(*) from customer_features")[0]
    rows = query(
        built_warehouse,
        "select count(*), count(distinct customer_id), count(churn_probability), "
        "count(conversion_probability), count(clv_expected_value), count(segment_name), "
        "count(top_categories_json), min(score_date) = max(score_date) from profile_insights",
    )[0]
    total, distinct, churn, conversion, clv, segment, categories, one_date = rows
    assert total == distinct == customers
    assert churn > 0 and conversion > 0 and clv > 0 and categories > 0
    assert segment == total
    assert one_date
    # churn is scored exactly for purchasers, conversion for customers without a recent order
    (purchasers,) = query(
        built_warehouse, "select count(*) from customer_features where has_purchased"
    )[0]
    (eligible,) = query(
        built_warehouse, "select count(*) from customer_features where is_conversion_eligible"
    )[0]
    assert churn == purchasers and conversion == eligible


def test_influential_factors_name_model_features(built_warehouse: Path) -> None:
    features = set(_registry(built_warehouse)["churn"]["features"])
    rows = query(
        built_warehouse,
        "select churn_factors_json from profile_insights where churn_factors_json is not null",
    )
    assert rows
    for (payload,) in rows:
        for factor in json.loads(payload):
            assert factor["code"] in features
            assert factor["importance"] in ("low", "medium", "high")
            assert factor["direction"] in ("increases", "decreases")
