"""Tests for profile_enrichment.ml.segments: k selection, names, stable ids, persistence."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from profile_enrichment.errors import ModelFitError, UserError
from profile_enrichment.ml.segments import (
    SegmentModel,
    infer_feature_roles,
    match_segment_ids,
    name_segments,
)

# Four archetypes in RFM + engagement + tenure space (days, counts, money).
PROTOTYPES = {
    "loyal": {"days_since_last_order": 7, "order_count": 25, "revenue_total": 2500,
              "sessions_30d": 12, "tenure_days": 900},
    "at_risk": {"days_since_last_order": 150, "order_count": 12, "revenue_total": 1800,
                "sessions_30d": 1, "tenure_days": 800},
    "new": {"days_since_last_order": 5, "order_count": 0.5, "revenue_total": 15,
            "sessions_30d": 10, "tenure_days": 15},
    "lapsed": {"days_since_last_order": 300, "order_count": 1, "revenue_total": 40,
               "sessions_30d": 0.3, "tenure_days": 450},
}  # fmt: skip
FEATURES = list(PROTOTYPES["loyal"])


def make_customers(sizes: dict[str, int], seed: int = 0) -> pd.DataFrame:
    """Gamma noise (~18% CV) around each prototype; a ``truth`` column for checking."""
    rng = np.random.default_rng(seed)
    parts = []
    for name, n in sizes.items():
        cols = {f: rng.gamma(30.0, v / 30.0, n) for f, v in PROTOTYPES[name].items()}
        parts.append(pd.DataFrame({**cols, "truth": name}))
    frame = pd.concat(parts, ignore_index=True)
    frame.insert(0, "customer_id", [f"c{seed}_{i:05d}" for i in range(len(frame))])
    return frame


SIZES = {"loyal": 60, "at_risk": 60, "new": 180, "lapsed": 300}


@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    return make_customers(SIZES)


@pytest.fixture(scope="module")
def model(customers: pd.DataFrame) -> SegmentModel:
    return SegmentModel(k_min=3, k_max=6, n_init=4).fit(customers, FEATURES)


def test_fit_recovers_archetypes_and_names_them(customers, model):
    assert model.k_ == 4
    assert set(model.silhouette_by_k_) == {3, 4, 5, 6}
    assert max(model.silhouette_by_k_, key=model.silhouette_by_k_.get) == 4
    pred = model.predict(customers)
    assert list(pred.columns) == ["customer_id", "segment_id", "segment_name"]
    assert pred["customer_id"].tolist() == customers["customer_id"].tolist()
    # Each archetype maps to exactly one segment, with the expected readable name.
    names = pred.groupby(customers["truth"])["segment_name"].agg(lambda s: set(s))
    assert names.to_dict() == {
        "loyal": {"High-value loyal"},
        "at_risk": {"At-risk big spenders"},
        "new": {"New browsers"},
        "lapsed": {"Lapsed one-timers"},
    }
    # Ids 1..k by descending size when there is no previous run.
    assert model.segment_sizes_ == {1: 300, 2: 180, 3: 60, 4: 60}
    # Centroids are in original units (the money centroid of the loyal segment is ~2500).
    loyal_id = pred.loc[customers["truth"] == "loyal", "segment_id"].iloc[0]
    assert model.centroids_.loc[loyal_id, "revenue_total"] == pytest.approx(2500, rel=0.1)
    assert set(model.log_features_) <= set(FEATURES)


def test_fit_is_deterministic(customers, model):
    again = SegmentModel(k_min=3, k_max=6, n_init=4).fit(customers, FEATURES)
    assert again.to_dict() == model.to_dict()


def test_ids_stable_across_refresh_when_sizes_and_order_change(model):
    # Different draw, reversed size ranking, shuffled rows: size-ordered ids would all change.
    sizes = {"loyal": 300, "at_risk": 180, "new": 60, "lapsed": 120}
    fresh = make_customers(sizes, seed=7).sample(frac=1.0, random_state=3)
    naive = SegmentModel(k_min=4, k_max=4, n_init=4).fit(fresh, FEATURES)
    stable = SegmentModel(k_min=4, k_max=4, n_init=4).fit(
        fresh, FEATURES, previous_centroids=model.centroids_
    )

    def id_by_truth(m: SegmentModel, frame: pd.DataFrame) -> dict[str, int]:
        pred = m.predict(frame)
        return pred.groupby(frame["truth"].to_numpy())["segment_id"].first().to_dict()

    before = id_by_truth(model, make_customers(SIZES))
    assert id_by_truth(stable, fresh) == before
    assert id_by_truth(naive, fresh) != before  # the test has teeth


def test_new_segment_gets_next_free_id(model):
    # Only three archetypes were seen before; a fourth appears in the new data.
    three = make_customers({"loyal": 60, "new": 180, "lapsed": 300}, seed=1)
    prev = SegmentModel(k_min=3, k_max=3, n_init=4).fit(three, FEATURES)
    assert sorted(prev.segment_names_) == [1, 2, 3]
    refreshed = SegmentModel(k_min=4, k_max=4, n_init=4).fit(
        make_customers(SIZES, seed=2), FEATURES, previous_centroids=prev.centroids_
    )
    frame = make_customers(SIZES, seed=2)
    ids = refreshed.predict(frame).groupby(frame["truth"].to_numpy())["segment_id"].first()
    prev_ids = prev.predict(three).groupby(three["truth"].to_numpy())["segment_id"].first()
    for truth in ("loyal", "new", "lapsed"):
        assert ids[truth] == prev_ids[truth]
    assert ids["at_risk"] == 4


def test_match_segment_ids_hungarian_and_threshold():
    prev = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    new = np.array([[0.1, 10.2], [9.8, 0.1], [0.2, -0.1], [50.0, 50.0]])
    assert match_segment_ids(new, prev, [7, 3, 5], sizes=[1, 1, 1, 1]) == [5, 3, 7, 8]
    # The far-away cluster would be matched to some old id without a threshold; with it, new.
    new3 = np.array([[0.1, 0.0], [10.0, 0.1], [50.0, 50.0]])
    assert match_segment_ids(new3, prev, [1, 2, 3], [5, 5, 5]) == [1, 2, 3]
    assert match_segment_ids(new3, prev, [1, 2, 3], [5, 5, 5], max_distance=2.0) == [1, 2, 4]


def test_names_degrade_gracefully_with_fewer_features(customers):
    only_money_recency = SegmentModel(k_min=4, k_max=4, n_init=4).fit(
        customers, ["revenue_total", "days_since_last_order"]
    )
    names = set(only_money_recency.segment_names_.values())
    # No rule that needs frequency / tenure / engagement may fire.
    assert not names & {"High-value loyal", "Lapsed one-timers", "New browsers"}
    assert names & {"Big spenders", "At-risk big spenders"}
    assert len(names) == 4

    unknown_roles = SegmentModel(k_min=3, k_max=3, n_init=2).fit(
        customers.rename(columns={"revenue_total": "x1", "order_count": "x2"}), ["x1", "x2"]
    )
    assert len(set(unknown_roles.segment_names_.values())) == 3  # fallback names, unique


def test_name_segments_rules_and_unique_qualifiers():
    roles = {"recency_days": "recency", "revenue": "monetary", "orders": "frequency", "x": None}
    z = pd.DataFrame(
        {
            "recency_days": [-1.0, 1.0, 1.2, 0.0, 0.0],
            "revenue": [1.5, 1.4, -0.8, 0.1, 0.0],
            "orders": [1.2, 0.3, -0.9, 0.0, 0.1],
            "x": [0.0, 0.0, 0.0, 2.0, -2.0],
        },
        index=pd.Index([1, 2, 3, 4, 5], name="segment_id"),
    )
    names = name_segments(z, roles)
    assert names[1] == "High-value loyal"
    assert names[2] == "At-risk big spenders"
    assert names[3] == "Lapsed one-timers"
    assert names[4] == "Mainstream (higher x)"
    assert names[5] == "Mainstream (lower x)"
    # Identical centroids still get unique names.
    same = name_segments(pd.DataFrame({"x": [0.0, 0.0]}, index=[1, 2]), {"x": None})
    assert same == {1: "Mainstream #1", 2: "Mainstream #2"}


def test_infer_feature_roles_and_overrides():
    roles = infer_feature_roles(
        [
            "days_since_last_order",
            "days_since_first_event",
            "avg_order_value",
            "order_count_365d",
            "sessions_30d",
            "is_email_subscriber",
            "mystery",
        ],
        overrides={"mystery": "engagement"},
    )
    assert roles == {
        "days_since_last_order": "recency",
        "days_since_first_event": "tenure",
        "avg_order_value": "monetary",
        "order_count_365d": "frequency",
        "sessions_30d": "engagement",
        "is_email_subscriber": None,
        "mystery": "engagement",
    }
    with pytest.raises(UserError, match="unknown segment role"):
        infer_feature_roles(["a"], {"a": "loyalty"})


def test_infer_roles_on_this_projects_feature_names():
    """Column names from macros/features/customer_features_as_of.sql and windowed_sums.sql."""
    roles = infer_feature_roles(
        [
            "recency_days",
            "days_since_last_visit",
            "tenure_days",
            "customer_tenure_days",
            "revenue_total",
            "revenue_90d",
            "average_order_value",
            "orders_total",
            "purchase_days_total",
            "sessions_30d",
            "product_views_30d",
            "cart_adds_30d",
            "checkouts_30d",
            "email_opens_30d",
            "active_days_total",
            "repeat_recency_days",  # BG/NBD t_x: high = good, not "days since"
            "recency_score",  # RFM: high = recent
            "orders_trend_30d",
            "bounce_rate",
            "has_purchased",
        ]
    )
    assert roles == {
        "recency_days": "recency",
        "days_since_last_visit": "recency",
        "tenure_days": "tenure",
        "customer_tenure_days": "tenure",
        "revenue_total": "monetary",
        "revenue_90d": "monetary",
        "average_order_value": "monetary",
        "orders_total": "frequency",
        "purchase_days_total": "frequency",
        "sessions_30d": "engagement",
        "product_views_30d": "engagement",
        "cart_adds_30d": "engagement",
        "checkouts_30d": "engagement",
        "email_opens_30d": "engagement",
        "active_days_total": "engagement",
        "repeat_recency_days": None,
        "recency_score": None,
        "orders_trend_30d": None,
        "bounce_rate": None,
        "has_purchased": None,
    }


def test_inverted_role_flips_the_sign():
    z = pd.DataFrame({"recency_score": [1.5, -1.5]}, index=[1, 2])
    assert name_segments(z, {"recency_score": "-recency"}) == {
        1: "Recently active",
        2: "Lapsed customers",
    }


def test_round_trip_through_json(customers, model):
    restored = SegmentModel.from_dict(json.loads(json.dumps(model.to_dict())))
    pd.testing.assert_frame_equal(restored.predict(customers), model.predict(customers))
    pd.testing.assert_frame_equal(restored.centroids_, model.centroids_)
    assert restored.segment_names_ == model.segment_names_
    with pytest.raises(UserError, match="not a SegmentModel"):
        SegmentModel.from_dict({"kind": "Other"})


def test_predict_handles_missing_values_and_empty_frames(customers, model):
    frame = customers.head(5).copy()
    frame.loc[0, "revenue_total"] = np.nan
    frame.loc[1, "order_count"] = np.inf
    pred = model.predict(frame)
    assert pred["segment_id"].notna().all()
    empty = model.predict(customers.head(0))
    assert list(empty.columns) == ["customer_id", "segment_id", "segment_name"]
    assert len(empty) == 0
    with pytest.raises(UserError, match="revenue_total"):
        model.predict(customers.drop(columns="revenue_total"))


def test_summary_shares_sum_to_one(model):
    summary = model.summary()
    assert summary["share"].sum() == pytest.approx(1.0)
    assert summary["segment_id"].tolist() == sorted(model.segment_names_)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (make_customers({"loyal": 2}), "fewer than k_min"),
        (make_customers({"loyal": 0}), "fewer than k_min"),
        (
            pd.DataFrame({"customer_id": range(50), "a": 1.0, "b": 3}),
            "all 2 features are constant",
        ),
        (
            pd.DataFrame({"customer_id": range(50), "a": [1.0, 2.0] * 25, "b": 0.0}),
            "only 2 distinct customers",
        ),
    ],
)
def test_degenerate_input_raises_model_fit_error(frame, message):
    cols = [c for c in frame.columns if c not in ("customer_id", "truth")][:2]
    with pytest.raises(ModelFitError, match=message):
        SegmentModel(k_min=3, k_max=5, n_init=2).fit(frame, cols)


def test_bad_feature_lists_are_user_errors(customers):
    with pytest.raises(UserError, match="missing from the frame: nope"):
        SegmentModel().fit(customers, ["revenue_total", "nope"])
    with pytest.raises(UserError, match="numeric or boolean"):
        SegmentModel().fit(customers, ["revenue_total", "truth"])
