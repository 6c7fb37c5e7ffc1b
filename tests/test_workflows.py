"""The publishing rules of profile_enrichment.ml.workflows, end to end on synthetic frames.

These are the functions the dbt Python models call (python_models/ml/*.py): train, gate the
candidate through the model registry, score with whoever is champion. No dbt here: small
synthetic frames with a known signal, and a registry in a pytest tmp folder.

The rules under test (workflows module docstring): a new version becomes champion only when it
fits, passes its checks and is not worse than the champion; otherwise the champion keeps
scoring and the registry records the rejected version with the reason. Re-running on the same
inputs is idempotent (versions are content hashes).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from profile_enrichment.errors import UserError
from profile_enrichment.ml import workflows
from profile_enrichment.ml.clv import BetaGeoModel, GammaGammaModel, customer_lifetime_value
from profile_enrichment.ml.registry import ModelRegistry

FEATURES = ["orders_365d", "sessions_30d", "days_since_last_order"]
TRAIN_DATES = ["2024-01-31", "2024-02-29", "2024-03-31"]
NEW_TRAIN_DATES = ["2024-02-29", "2024-03-31", "2024-04-30"]
AS_OF = "2024-04-30"
NEXT_AS_OF = "2024-05-31"
BUCKETS = {"low", "medium", "high"}
LABELS = {
    "churn": ("is_churned", "has_purchased"),
    "conversion": ("is_converted", "is_conversion_eligible"),
}


# --------------------------------------------------------------------------------------------
# synthetic data
# --------------------------------------------------------------------------------------------
def propensity_frame(
    dates: list[str],
    n: int = 300,
    seed: int = 0,
    noise_dates: tuple[str, ...] = (),
    noise_features: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Stacked monthly snapshots with a real signal: the label follows a logistic model of the
    features (fewer orders, fewer sessions, longer since the last order => more likely).

    On ``noise_dates`` the ``noise_features`` are redrawn independently of the label, so a
    model trained there cannot learn them. Both labels and both population flags are set, so
    the frame serves churn and conversion alike; has_purchased / is_conversion_eligible are
    mixed so that the population filter is exercised on scoring.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for d in dates:
        orders = rng.poisson(3.0, n).astype("float64")
        sessions = rng.gamma(2.0, 3.0, n)
        recency = rng.uniform(0.0, 365.0, n)
        margin = -0.2 - 1.0 * (orders - 3.0) - 0.3 * (sessions - 6.0) + 0.02 * (recency - 182.0)
        label = rng.random(n) < 1.0 / (1.0 + np.exp(-margin))
        values = {"orders_365d": orders, "sessions_30d": sessions, "days_since_last_order": recency}
        if d in noise_dates:
            redraw = {
                "orders_365d": lambda: rng.poisson(3.0, n).astype("float64"),
                "sessions_30d": lambda: rng.gamma(2.0, 3.0, n),
                "days_since_last_order": lambda: rng.uniform(0.0, 365.0, n),
            }
            for name in noise_features:
                values[name] = redraw[name]()
        parts.append(
            pd.DataFrame(
                {
                    "customer_id": [f"c{i:05d}" for i in range(n)],
                    "as_of_date": pd.Timestamp(d),
                    **values,
                    "is_churned": label,
                    "is_converted": label,
                    "has_purchased": np.arange(n) % 5 != 0,
                    "is_conversion_eligible": np.arange(n) % 4 != 0,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def scoring_frame(n: int = 400, seed: int = 99) -> pd.DataFrame:
    """customer_features at the run's as-of date (one row per customer, no labels)."""
    frame = propensity_frame([AS_OF], n=n, seed=seed)
    return frame.drop(columns=["is_churned", "is_converted"])


def config_at(root: Path, as_of: str = AS_OF, **overrides) -> workflows.MLConfig:
    return workflows.MLConfig(artifacts_dir=root, as_of_date=as_of, **overrides)


def registry_rows(root: Path) -> list[str]:
    path = root / "registry.jsonl"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def registry_state(root: Path) -> tuple[list[str], int, int]:
    """The registry's rows plus the file's inode and mtime. Every registration rewrites the
    file atomically (a new inode), so an unchanged state means nothing was re-registered."""
    stat = (root / "registry.jsonl").stat()
    return registry_rows(root), stat.st_ino, stat.st_mtime_ns


def without_as_of(scores: pd.DataFrame) -> pd.DataFrame:
    return scores.drop(columns=["as_of_date"])


@pytest.fixture(scope="module")
def churn_champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A registry whose churn champion was trained on good data, and that champion's scores.

    Trained once per module; tests copy the folder (see ``champion_root``) so they stay
    independent.
    """
    root = tmp_path_factory.mktemp("champion_registry")
    scores = workflows.run_propensity(
        "churn",
        propensity_frame(TRAIN_DATES),
        scoring_frame(),
        FEATURES,
        ModelRegistry(root),
        config_at(root),
    )
    return root, scores


@pytest.fixture
def champion_root(churn_champion, tmp_path: Path) -> tuple[Path, pd.DataFrame, str]:
    """A private copy of the champion registry: (root, champion scores, champion version)."""
    source, scores = churn_champion
    root = tmp_path / "artifacts"
    shutil.copytree(source, root)
    champion = ModelRegistry(root).champion("churn")
    assert champion is not None
    return root, scores, champion.model_version


# --------------------------------------------------------------------------------------------
# propensity: publishing a good model
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["churn", "conversion"])
def test_first_good_model_is_published_and_scores_its_population(kind, tmp_path) -> None:
    label, population = LABELS[kind]
    registry = ModelRegistry(tmp_path)
    scoring = scoring_frame()
    scores = workflows.run_propensity(
        kind, propensity_frame(TRAIN_DATES), scoring, FEATURES, registry, config_at(tmp_path)
    )

    champion = registry.champion(kind)
    assert champion is not None and champion.status == "champion"
    assert champion.reason.startswith("published (first model)")
    assert champion.metrics["roc_auc"] > 0.8  # the signal is real, and learned
    assert champion.training_window_start == TRAIN_DATES[0]
    assert champion.training_window_end == TRAIN_DATES[-1]
    assert champion.params["label"] == label and champion.features == FEATURES

    assert list(scores.columns) == workflows.propensity_output_columns()
    # Only the model's population is scored, once per customer, in customer order.
    expected_ids = sorted(scoring.loc[scoring[population], "customer_id"])
    assert scores["customer_id"].tolist() == expected_ids
    assert (scores["model_version"] == champion.model_version).all()
    assert (scores["as_of_date"] == date.fromisoformat(AS_OF)).all()
    assert scores["probability"].between(0.0, 1.0).all()
    assert scores["percentile"].between(1, 100).all() and scores["percentile"].max() == 100
    assert set(scores["bucket"]) <= BUCKETS and len(set(scores["bucket"])) > 1
    high = scores["score"] >= 70
    low = scores["score"] < 30
    assert (scores.loc[high, "bucket"] == "high").all()
    assert (scores.loc[low, "bucket"] == "low").all()
    # More orders => less likely (the synthetic truth), so the ranking must follow it.
    rho = scores["probability"].corr(
        scoring.set_index("customer_id").loc[expected_ids, "orders_365d"].reset_index(drop=True),
        method="spearman",
    )
    assert rho < -0.3

    for text, first_code in zip(scores["factors_json"], scores["factor_1_code"], strict=True):
        factors = json.loads(text)
        assert 1 <= len(factors) <= 3
        assert {f["code"] for f in factors} <= set(FEATURES)
        assert factors[0]["code"] == first_code
        for factor in factors:
            assert factor["direction"] in {"increases", "decreases"}
            assert factor["importance"] in {"low", "medium", "high"}
            assert isinstance(factor["value"], float)


def test_factors_json_leaves_out_what_is_missing() -> None:
    """One JSON array per row, keys sorted, in factor order: a factor without a code is left
    out, a factor without a value has no "value" key, a row without any factor is None."""

    def factor(k: int, code, value, importance="high", direction="increases") -> dict:
        return {
            f"factor_{k}_code": code,
            f"factor_{k}_value": value,
            f"factor_{k}_importance": importance,
            f"factor_{k}_direction": direction,
        }

    rows = [
        factor(1, "orders_365d", 3.0) | factor(2, "recency_days", 0.1234567) | factor(3, "x", 1),
        factor(1, "orders_365d", np.nan, "low", "decreases")
        | factor(2, None, 5.0)
        | factor(3, "recency_days", 2.5),
        factor(1, None, 1.0) | factor(2, None, 2.0) | factor(3, None, 3.0),
    ]
    frame = pd.DataFrame(rows)
    for column in frame.columns:
        if not column.endswith("_value"):
            frame[column] = pd.array(frame[column], dtype="str")  # as score_propensity makes them
    assert workflows._factors_json(frame) == [
        '[{"code": "orders_365d", "direction": "increases", "importance": "high", "value": 3.0}, '
        '{"code": "recency_days", "direction": "increases", "importance": "high", '
        '"value": 0.123457}, '
        '{"code": "x", "direction": "increases", "importance": "high", "value": 1.0}]',
        '[{"code": "orders_365d", "direction": "decreases", "importance": "low"}, '
        '{"code": "recency_days", "direction": "increases", "importance": "high", "value": 2.5}]',
        None,
    ]


def test_rerun_on_identical_inputs_reuses_the_version_and_scores(champion_root) -> None:
    root, first_scores, version = champion_root
    before = registry_state(root)
    scores = workflows.run_propensity(
        "churn",
        propensity_frame(TRAIN_DATES),
        scoring_frame(),
        FEATURES,
        ModelRegistry(root),
        config_at(root),
    )
    assert registry_state(root) == before  # no new row, not even a rewrite
    assert ModelRegistry(root).champion("churn").model_version == version
    # The first run scored with the freshly trained model, this one with the stored artifact.
    pd.testing.assert_frame_equal(scores, first_scores)


def test_row_order_does_not_change_the_version(champion_root) -> None:
    root, first_scores, _ = champion_root
    shuffled = propensity_frame(TRAIN_DATES).sample(frac=1.0, random_state=3)
    scores = workflows.run_propensity(
        "churn",
        shuffled,
        scoring_frame().sample(frac=1.0, random_state=4),
        FEATURES,
        ModelRegistry(root),
        config_at(root),
    )
    assert len(ModelRegistry(root).entries("churn")) == 1
    pd.testing.assert_frame_equal(scores, first_scores)


# --------------------------------------------------------------------------------------------
# propensity: degenerate data is never published
# --------------------------------------------------------------------------------------------
def _single_class() -> tuple[pd.DataFrame, list[str]]:
    frame = propensity_frame(NEW_TRAIN_DATES, seed=11)
    frame["is_churned"] = False
    return frame, FEATURES


def _too_few_rows() -> tuple[pd.DataFrame, list[str]]:
    return propensity_frame(NEW_TRAIN_DATES, n=60, seed=12), FEATURES  # 180 < 200 rows


def _no_usable_features() -> tuple[pd.DataFrame, list[str]]:
    frame = propensity_frame(NEW_TRAIN_DATES, seed=13)
    frame["orders_365d"] = np.nan
    frame["sessions_30d"] = 5.0
    frame["days_since_last_order"] = np.nan
    return frame, FEATURES


def _label_leak() -> tuple[pd.DataFrame, list[str]]:
    frame = propensity_frame(NEW_TRAIN_DATES, seed=14)
    frame["churned_in_window"] = frame["is_churned"].astype("float64")
    return frame, [*FEATURES, "churned_in_window"]


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (_single_class, "single_class"),
        (_too_few_rows, "too_few_rows"),
        (_no_usable_features, "no_usable_features"),
        (_label_leak, "label_leak:churned_in_window"),
    ],
    ids=["single-class", "too-few-rows", "all-nan-or-constant-features", "label-leak"],
)
def test_degenerate_training_data_is_rejected_and_the_champion_keeps_scoring(
    champion_root, make, problem
) -> None:
    root, champion_scores, champion_version = champion_root
    registry = ModelRegistry(root)
    champion_before = registry.champion("churn")
    training, features = make()

    scores = workflows.run_propensity(
        "churn", training, scoring_frame(), features, registry, config_at(root, NEXT_AS_OF)
    )

    entries = registry.entries("churn")
    assert len(entries) == 2
    rejected = next(e for e in entries if e.model_version != champion_version)
    assert rejected.status == "rejected"
    assert rejected.reason.startswith("degenerate training data")
    assert problem in rejected.reason
    assert rejected.artifact_path is None  # nothing was trained, nothing saved
    assert registry.champion("churn") == champion_before  # untouched
    # The champion scores today's population exactly as before; only the date moves on.
    assert (scores["model_version"] == champion_version).all()
    assert (scores["as_of_date"] == date.fromisoformat(NEXT_AS_OF)).all()
    pd.testing.assert_frame_equal(without_as_of(scores), without_as_of(champion_scores))


def test_a_listed_feature_missing_from_training_is_refused_clearly(champion_root) -> None:
    """The feature catalog lists a column the training snapshots do not have: either a user
    error naming it, or a rejected version with the guardrail's missing_feature reason (and the
    champion keeps scoring)."""
    root, champion_scores, champion_version = champion_root
    registry = ModelRegistry(root)
    features = [*FEATURES, "orders_90d"]
    try:
        scores = workflows.run_propensity(
            "churn",
            propensity_frame(NEW_TRAIN_DATES, seed=71),
            scoring_frame(),
            features,
            registry,
            config_at(root, NEXT_AS_OF),
        )
    except UserError as err:
        assert "orders_90d" in str(err)
        return
    rejected = next(e for e in registry.entries("churn") if e.model_version != champion_version)
    assert rejected.status == "rejected" and "missing_feature:orders_90d" in rejected.reason
    pd.testing.assert_frame_equal(without_as_of(scores), without_as_of(champion_scores))


def test_a_constant_feature_is_dropped_without_blocking_the_model(tmp_path) -> None:
    training = propensity_frame(TRAIN_DATES, seed=21)
    training["email_opens_30d"] = 0.0
    scoring = scoring_frame()
    scoring["email_opens_30d"] = 0.0
    registry = ModelRegistry(tmp_path)
    scores = workflows.run_propensity(
        "churn", training, scoring, [*FEATURES, "email_opens_30d"], registry, config_at(tmp_path)
    )
    champion = registry.champion("churn")
    assert champion is not None
    assert "dropped constant/empty features: email_opens_30d" in champion.reason
    assert not scores.empty
    assert "email_opens_30d" not in set(scores["factor_1_code"])


def test_empty_build_publishes_nothing_and_returns_no_scores(tmp_path) -> None:
    """`dbt build --empty` hands the models zero rows: no crash, no champion, a reason."""
    empty_training = propensity_frame(TRAIN_DATES).iloc[0:0]
    empty_scoring = scoring_frame().iloc[0:0]
    registry = ModelRegistry(tmp_path)
    scores = workflows.run_propensity(
        "churn", empty_training, empty_scoring, FEATURES, registry, config_at(tmp_path)
    )
    assert scores.empty and list(scores.columns) == workflows.propensity_output_columns()
    assert registry.champion("churn") is None
    (entry,) = registry.entries("churn")
    assert entry.status == "rejected" and "too_few_rows" in entry.reason


# --------------------------------------------------------------------------------------------
# propensity: the champion comparison and the metric floor
# --------------------------------------------------------------------------------------------
def test_a_worse_candidate_is_rejected_by_the_champion_comparison(champion_root) -> None:
    """New data whose training snapshots carry only one of the three signals: the candidate
    clears the floor but is far worse than the champion on the same validation snapshot."""
    root, champion_scores, champion_version = champion_root
    registry = ModelRegistry(root)
    training = propensity_frame(
        NEW_TRAIN_DATES,
        seed=31,
        noise_dates=tuple(NEW_TRAIN_DATES[:-1]),
        noise_features=("orders_365d", "sessions_30d"),
    )
    scores = workflows.run_propensity(
        "churn", training, scoring_frame(), FEATURES, registry, config_at(root, NEXT_AS_OF)
    )

    rejected = next(e for e in registry.entries("churn") if e.model_version != champion_version)
    assert rejected.status == "rejected"
    assert "below the champion's" in rejected.reason, rejected.reason
    candidate_auc = rejected.metrics["roc_auc"]
    champion_auc = rejected.metrics["champion_comparison"]["roc_auc"]
    assert candidate_auc >= 0.6  # above the floor: it is the comparison that refused it
    assert champion_auc - candidate_auc > 0.02
    # The champion was re-evaluated on the candidate's (newer) validation snapshot.
    assert rejected.metrics["valid_as_of_date"] == NEW_TRAIN_DATES[-1]
    assert rejected.artifact_path is not None  # kept for inspection, never scored
    assert registry.champion("churn").model_version == champion_version
    pd.testing.assert_frame_equal(without_as_of(scores), without_as_of(champion_scores))


def test_an_equally_good_candidate_on_new_data_replaces_the_champion(champion_root) -> None:
    root, _, old_version = champion_root
    registry = ModelRegistry(root)
    scores = workflows.run_propensity(
        "churn",
        propensity_frame(NEW_TRAIN_DATES, seed=41),
        scoring_frame(),
        FEATURES,
        registry,
        config_at(root, NEXT_AS_OF),
    )
    champion = registry.champion("churn")
    assert champion.model_version != old_version
    assert champion.reason.startswith("published")
    retired = registry.get("churn", old_version)
    assert retired.status == "retired" and retired.superseded_by == champion.model_version
    assert (scores["model_version"] == champion.model_version).all()


def test_a_candidate_below_the_floor_is_not_published_even_without_champion(tmp_path) -> None:
    noise = tuple(FEATURES)
    training = propensity_frame(
        TRAIN_DATES, seed=51, noise_dates=tuple(TRAIN_DATES), noise_features=noise
    )
    registry = ModelRegistry(tmp_path)
    scores = workflows.run_propensity(
        "churn", training, scoring_frame(), FEATURES, registry, config_at(tmp_path)
    )
    assert registry.champion("churn") is None
    (entry,) = registry.entries("churn")
    assert entry.status == "rejected"
    assert "below the floor" in entry.reason, entry.reason
    assert entry.metrics["roc_auc"] < 0.6
    assert scores.empty
    assert list(scores.columns) == workflows.propensity_output_columns()


# --------------------------------------------------------------------------------------------
# lifetime value
# --------------------------------------------------------------------------------------------
CLV_TRUTH = {"r": 0.5, "alpha": 20.0, "a": 0.8, "b": 4.0, "p": 6.0, "q": 4.0, "v": 15.0}


def clv_features(n_buyers: int = 2000, n_nonbuyers: int = 200, seed: int = 0) -> pd.DataFrame:
    """customer_features' lifetime-value inputs, simulated from BG/NBD + Gamma-Gamma in days.

    λ ~ Gamma(r, rate α), p ~ Beta(a, b); given K Poisson events on (0, T] the customer drops
    out after Geometric(p) of them, and the x-th event time is T * Beta(x, K - x + 1); the mean
    of x Gamma(p, rate ν) spends is Gamma(p x, rate x ν) with ν ~ Gamma(q, rate v). Customers
    who never bought have null inputs (they are not scored).
    """
    t = CLV_TRUTH
    rng = np.random.default_rng(seed)
    T = rng.integers(30, 731, n_buyers).astype("float64")
    lam = rng.gamma(t["r"], 1.0 / t["alpha"], n_buyers)
    k = rng.poisson(lam * T)
    x = np.minimum(k, rng.geometric(rng.beta(t["a"], t["b"], n_buyers)))
    repeat = x > 0
    t_x = np.zeros(n_buyers)
    t_x[repeat] = T[repeat] * rng.beta(x[repeat], k[repeat] - x[repeat] + 1)
    nu = rng.gamma(t["q"], 1.0 / t["v"], n_buyers)
    m = np.full(n_buyers, np.nan)
    m[repeat] = rng.gamma(t["p"] * x[repeat], 1.0 / (x[repeat] * nu[repeat]))
    buyers = pd.DataFrame(
        {
            "customer_id": [f"b{i:05d}" for i in range(n_buyers)],
            "repeat_purchase_days": x.astype("float64"),
            "repeat_recency_days": t_x,
            "customer_tenure_days": T,
            "repeat_average_value": m,
        }
    )
    nonbuyers = pd.DataFrame({"customer_id": [f"n{i:05d}" for i in range(n_nonbuyers)]})
    for column in workflows.CLV_INPUTS:
        nonbuyers[column] = np.nan
    return pd.concat([buyers, nonbuyers], ignore_index=True).sample(frac=1.0, random_state=seed)


def never_repeating_features(n: int = 500, seed: int = 7) -> pd.DataFrame:
    """Every buyer bought exactly once: BG/NBD is not identified, the fit must fail."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": [f"o{i:05d}" for i in range(n)],
            "repeat_purchase_days": 0.0,
            "repeat_recency_days": 0.0,
            "customer_tenure_days": rng.integers(1, 700, n).astype("float64"),
            "repeat_average_value": np.nan,
        }
    )


def test_clv_is_published_on_bgnbd_data_and_is_idempotent(tmp_path, monkeypatch) -> None:
    registry = ModelRegistry(tmp_path)
    features = clv_features()
    scores = workflows.run_clv(features, registry, config_at(tmp_path))

    champion = registry.champion("clv")
    assert champion is not None and champion.reason == "fitted and converged"
    assert champion.n_train == 2000
    # 2,000 customers: the fit lands near the generating parameters.
    for name, key in [("r", "r"), ("alpha", "alpha"), ("a", "a"), ("b", "b"), ("p", "p")]:
        assert champion.params[key] == pytest.approx(CLV_TRUTH[name], rel=0.4), name
    assert registry.load_artifact_json(champion)["r"] == champion.params["r"]

    assert list(scores.columns) == workflows.CLV_OUTPUT_COLUMNS
    assert scores["customer_id"].tolist() == sorted(f"b{i:05d}" for i in range(2000))
    assert scores["clv_probability_alive"].between(0.0, 1.0).all()
    assert (scores["clv_expected_purchases"] >= 0).all()
    assert (scores["clv_expected_order_value"] > 0).all()
    assert (scores["clv_predicted_value"] >= 0).all()
    assert scores["clv_percentile"].between(1, 100).all()
    assert (scores["clv_model_version"] == champion.model_version).all()
    assert (scores["clv_horizon_days"] == 365).all() and (
        scores["clv_currency_code"] == "USD"
    ).all()

    # Same buyers in another row order: the champion's stored parameters are reused, not refitted.
    before = registry_state(tmp_path)

    def no_refit(*args, **kwargs):
        raise AssertionError("the champion should have been reused, not refitted")

    monkeypatch.setattr(workflows, "fit_clv_models", no_refit)
    again = workflows.run_clv(
        features.sample(frac=1.0, random_state=1), registry, config_at(tmp_path)
    )
    assert registry_state(tmp_path) == before
    pd.testing.assert_frame_equal(again, scores)


def test_clv_fit_failure_keeps_the_champion_parameters(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    first = workflows.run_clv(clv_features(), registry, config_at(tmp_path))
    champion = registry.champion("clv")

    degenerate = never_repeating_features()
    scores = workflows.run_clv(degenerate, registry, config_at(tmp_path, NEXT_AS_OF))

    rejected = next(e for e in registry.entries("clv") if e.status == "rejected")
    assert "did not fit" in rejected.reason and "repeat purchase" in rejected.reason
    assert registry.champion("clv") == champion
    assert (scores["clv_model_version"] == champion.model_version).all()
    # Scores are the champion's parameters applied to today's customers.
    p = champion.params
    bg = BetaGeoModel(time_unit="days")
    bg.r_, bg.alpha_, bg.a_, bg.b_ = p["r"], p["alpha"], p["a"], p["b"]
    gg = GammaGammaModel()
    gg.p_, gg.q_, gg.v_ = p["p"], p["q"], p["gamma"]
    x = np.zeros(len(degenerate))
    age = degenerate.sort_values("customer_id")["customer_tenure_days"].to_numpy()
    np.testing.assert_allclose(
        scores["clv_probability_alive"], bg.probability_alive(x, x, age), rtol=1e-12
    )
    np.testing.assert_allclose(
        scores["clv_expected_purchases"], bg.expected_purchases(365, x, x, age), rtol=1e-12
    )
    expected_value = customer_lifetime_value(
        bg, gg, x, x, age, x, horizon_months=12, discount_rate_monthly=0.01
    )
    np.testing.assert_allclose(scores["clv_predicted_value"], expected_value, rtol=1e-12)

    # And the champion's own data still scores exactly as at first.
    pd.testing.assert_frame_equal(
        workflows.run_clv(clv_features(), registry, config_at(tmp_path)), first
    )


def test_clv_fit_failure_without_champion_returns_no_scores(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    scores = workflows.run_clv(never_repeating_features(), registry, config_at(tmp_path))
    assert scores.empty and list(scores.columns) == workflows.CLV_OUTPUT_COLUMNS
    assert registry.champion("clv") is None
    (entry,) = registry.entries("clv")
    assert entry.status == "rejected" and entry.reason.startswith("did not fit")


def test_clv_without_buyers_returns_no_scores(tmp_path) -> None:
    nobody = clv_features(n_buyers=0, n_nonbuyers=20)
    scores = workflows.run_clv(nobody, ModelRegistry(tmp_path), config_at(tmp_path))
    assert scores.empty and list(scores.columns) == workflows.CLV_OUTPUT_COLUMNS


# --------------------------------------------------------------------------------------------
# segments
# --------------------------------------------------------------------------------------------
SEGMENT_FEATURES = ["recency_days", "orders_365d", "revenue_365d", "sessions_30d"]
SEGMENT_CENTRES = np.array(
    [
        [40.0, 4.0, 200.0, 6.0],  # mainstream
        [300.0, 1.0, 40.0, 1.0],  # lapsed one-timers
        [150.0, 2.0, 80.0, 15.0],  # browsers
        [10.0, 12.0, 900.0, 20.0],  # recent, frequent, big spenders
    ]
)


def segment_features(
    groups: np.ndarray, first_id: int = 0, seed: int = 0, jitter: float = 0.15
) -> pd.DataFrame:
    """Customers ``s<first_id + i>`` drawn around the centre of behaviour group ``groups[i]``
    (well separated, with multiplicative noise of ``jitter``)."""
    rng = np.random.default_rng(seed)
    values = SEGMENT_CENTRES[groups] * rng.lognormal(0.0, jitter, (len(groups), 4))
    frame = pd.DataFrame(values, columns=SEGMENT_FEATURES)
    frame.insert(0, "customer_id", [f"s{first_id + i:05d}" for i in range(len(groups))])
    frame["tenure_days"] = 400.0
    return frame


def test_segment_ids_are_stable_across_a_refresh(tmp_path) -> None:
    registry = ModelRegistry(tmp_path)
    groups = np.repeat([0, 1, 2, 3], [320, 240, 160, 80])  # ids 1..4 follow these sizes
    first = workflows.run_segments(
        segment_features(groups), SEGMENT_FEATURES, registry, config_at(tmp_path)
    )
    assert list(first.columns) == workflows.SEGMENT_OUTPUT_COLUMNS
    assert first["segment_name"].str.len().gt(0).all()
    assert first["segment_id"].dtype == "int64"
    assert 3 <= first["segment_id"].nunique() <= 7
    champion = registry.champion("segments")
    assert champion.params["k"] == first["segment_id"].nunique()

    # Identical rerun: same version, same frame, registry untouched.
    before = registry_state(tmp_path)
    again = workflows.run_segments(
        segment_features(groups), SEGMENT_FEATURES, registry, config_at(tmp_path)
    )
    assert registry_state(tmp_path) == before
    pd.testing.assert_frame_equal(again, first)

    # A refresh: every customer's behaviour redrawn (new noise), 40 customers gone, and 600
    # new ones in the smallest group, which becomes the largest. Numbering afresh by size
    # would renumber every segment; matching to the previous centroids keeps the ids.
    kept = segment_features(groups, seed=1).iloc[40:]
    newcomers = segment_features(np.full(600, 3), first_id=len(groups), seed=2)
    second = workflows.run_segments(
        pd.concat([kept, newcomers], ignore_index=True),
        SEGMENT_FEATURES,
        registry,
        config_at(tmp_path, NEXT_AS_OF),
    )
    new_champion = registry.champion("segments")
    assert new_champion.model_version != champion.model_version
    assert registry.get("segments", champion.model_version).status == "retired"
    both = first.merge(second, on="customer_id", suffixes=("_1", "_2"))
    assert len(both) == len(groups) - 40
    same = (both["segment_id_1"] == both["segment_id_2"]).mean()
    assert same >= 0.95, same
    assert second["segment_name"].str.len().gt(0).all()


def test_segments_refuse_an_empty_feature_list(tmp_path) -> None:
    with pytest.raises(UserError, match="no segmentation features"):
        workflows.run_segments(
            segment_features(np.arange(40) % 4), [], ModelRegistry(tmp_path), config_at(tmp_path)
        )


# --------------------------------------------------------------------------------------------
# small helpers: feature lists, registry table, percentiles, config, drift
# --------------------------------------------------------------------------------------------
def test_feature_lists_follow_the_yaml_order() -> None:
    catalog = pd.DataFrame(
        {
            "column_name": ["sessions_30d", "customer_id", "orders_365d", "recency_days", "aov"],
            "ordinal": [4, 1, 2, 3, 5],
            "is_feature": [True, False, True, False, True],
            "is_segmentation_feature": [True, False, False, True, True],
        }
    )
    features, segmentation = workflows.feature_lists(catalog)
    assert features == ["orders_365d", "sessions_30d", "aov"]
    assert segmentation == ["recency_days", "sessions_30d", "aov"]
    assert workflows.feature_lists(catalog.iloc[0:0]) == ([], [])


def test_propensity_refuses_an_empty_feature_list(tmp_path) -> None:
    with pytest.raises(UserError, match="no model features"):
        workflows.run_propensity(
            "churn",
            propensity_frame(TRAIN_DATES),
            scoring_frame(),
            [],
            ModelRegistry(tmp_path),
            config_at(tmp_path),
        )
    with pytest.raises(UserError, match="unknown propensity model"):
        workflows.run_propensity(
            "upsell",
            propensity_frame(TRAIN_DATES),
            scoring_frame(),
            FEATURES,
            ModelRegistry(tmp_path),
            config_at(tmp_path),
        )


def test_registry_table_has_one_row_per_version_with_parseable_json(champion_root) -> None:
    root, _, champion_version = champion_root
    registry = ModelRegistry(root)
    workflows.run_propensity(  # a rejected version next to the champion
        "churn",
        _single_class()[0],
        scoring_frame(),
        FEATURES,
        registry,
        config_at(root, NEXT_AS_OF),
    )
    workflows.run_clv(clv_features(n_buyers=500, seed=3), registry, config_at(root))

    table = workflows.registry_table(registry)
    assert list(table.columns) == workflows.REGISTRY_COLUMNS
    assert len(table) == len(registry_rows(root)) == 3
    assert not table.duplicated(["model_name", "model_version"]).any()
    assert table["n_train"].dtype == "int64" and table["n_valid"].dtype == "int64"
    assert sorted(table["status"]) == ["champion", "champion", "rejected"]
    for _, row in table.iterrows():
        assert isinstance(json.loads(row["params_json"]), dict)
        assert isinstance(json.loads(row["metrics_json"]), dict)
        assert isinstance(json.loads(row["features_json"]), list)
    churn = table[table["model_version"] == champion_version].iloc[0]
    assert json.loads(churn["features_json"]) == FEATURES
    assert json.loads(churn["metrics_json"])["roc_auc"] > 0.8
    assert churn["artifact_sha256"] and churn["artifact_path"].startswith("churn/")

    empty = workflows.registry_table(ModelRegistry(root / "nothing-here"))
    assert empty.empty and list(empty.columns) == workflows.REGISTRY_COLUMNS


def test_percentile_rank_is_1_to_100_ties_share_and_monotone() -> None:
    pinned = workflows.percentile_rank(pd.Series([3.0, 1.0, 2.0, 2.0]))
    assert pinned.tolist() == [100, 25, 50, 50]

    rng = np.random.default_rng(0)
    values = pd.Series(rng.integers(0, 300, 1000).astype("float64"), index=rng.permutation(1000))
    pct = workflows.percentile_rank(values)
    assert pct.dtype == "int64" and pct.index.equals(values.index)
    assert pct.between(1, 100).all()
    assert pct.min() == 1 and pct.max() == 100
    order = np.argsort(values.to_numpy(), kind="stable")
    assert np.all(np.diff(pct.to_numpy()[order]) >= 0)  # monotone in the value
    assert (pct.groupby(values).nunique() == 1).all()  # ties share a percentile

    assert workflows.percentile_rank(pd.Series([5.0])).tolist() == [100]
    assert workflows.percentile_rank(pd.Series([], dtype="float64")).empty


def test_as_of_from_reads_the_run_date_and_is_none_without_events() -> None:
    run_date = pd.DataFrame({"as_of_date": [pd.Timestamp("2024-04-30")]})
    assert workflows.as_of_from(run_date) == "2024-04-30"
    # No accepted events, or dbt build --empty: the models return empty_output(...) instead.
    empty = pd.DataFrame({"as_of_date": pd.Series([], dtype="datetime64[us]")})
    assert workflows.as_of_from(empty) is None
    assert workflows.as_of_from(pd.DataFrame({"as_of_date": [pd.NaT]})) is None


@pytest.mark.parametrize(
    ("model", "columns"),
    [
        ("ml_churn_scores", workflows.propensity_output_columns()),
        ("ml_conversion_scores", workflows.propensity_output_columns()),
        ("ml_clv_scores", workflows.CLV_OUTPUT_COLUMNS),
        ("ml_segments", workflows.SEGMENT_OUTPUT_COLUMNS),
        ("ml_feature_drift", workflows.DRIFT_OUTPUT_COLUMNS),
    ],
)
def test_empty_output_has_the_model_columns_typed(model, columns) -> None:
    frame = workflows.empty_output(model)
    assert frame.empty and list(frame.columns) == columns
    numeric = [c for c in columns if c in {"probability", "psi", "clv_predicted_value"}]
    integer = [c for c in columns if c in {"score", "percentile", "clv_percentile", "segment_id"}]
    assert all(frame[c].dtype == "float64" for c in numeric)
    assert all(frame[c].dtype == "int64" for c in integer)


def test_ml_config_from_meta_casts_vars_and_rejects_bad_ones() -> None:
    config = workflows.MLConfig.from_meta(
        {
            "artifacts_dir": "x/y",
            "propensity_min_rows": "50",
            "propensity_metric_floor": "",
            "segment_k_max": 5,
        },
        "2024-04-30",
    )
    assert config.artifacts_dir == Path("x/y") and config.propensity_min_rows == 50
    assert config.propensity_metric_floor == 0.6 and config.segment_k_max == 5
    assert workflows.MLConfig.from_meta(None, AS_OF) == config_at(Path("data/artifacts"))
    with pytest.raises(UserError, match="propensity_min_rows must be int"):
        workflows.MLConfig.from_meta({"propensity_min_rows": "many"}, AS_OF)
    assert workflows.MLConfig.from_meta({"ml_models_at_once": "2"}, AS_OF).models_at_once == 2
    with pytest.raises(UserError, match="ml_models_at_once must be 1 or more, got 0"):
        workflows.MLConfig.from_meta({"ml_models_at_once": "0"}, AS_OF)


def _enter_slots(config: workflows.MLConfig, n_models: int, inside) -> list[BaseException]:
    """Run ``n_models`` threads (dbt's threads, each a Python model) through memory_slot."""
    errors: list[BaseException] = []

    def one_model() -> None:
        try:
            with workflows.memory_slot(config):
                inside()
        except BaseException as err:  # reported to the test, not lost in the thread
            errors.append(err)

    threads = [threading.Thread(target=one_model) for _ in range(n_models)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def test_memory_slot_lets_one_python_model_hold_its_frames_at_a_time() -> None:
    guard, active, most, done = threading.Lock(), [0], [0], []

    def inside() -> None:
        with guard:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.02)  # long enough for another thread to get in if nothing stops it
        with guard:
            active[0] -= 1
            done.append(1)

    assert _enter_slots(config_at(Path(".")), 4, inside) == []
    assert len(done) == 4 and most[0] == 1


def test_memory_slot_with_two_slots_lets_two_models_in_together() -> None:
    meeting = threading.Barrier(2, timeout=30)  # passes only if both are inside at once
    two = workflows.MLConfig.from_meta({"ml_models_at_once": 2}, AS_OF)
    assert _enter_slots(two, 2, meeting.wait) == []
    one = workflows.MLConfig.from_meta({"ml_models_at_once": 1}, AS_OF)
    broken = _enter_slots(one, 2, threading.Barrier(2, timeout=0.5).wait)
    assert broken and all(isinstance(e, threading.BrokenBarrierError) for e in broken)


def test_run_drift_flags_a_shifted_feature() -> None:
    training = propensity_frame(TRAIN_DATES, seed=61)
    scoring = scoring_frame(seed=62)
    scoring["sessions_30d"] = scoring["sessions_30d"] * 4.0
    drift = workflows.run_drift(training, scoring, FEATURES, config_at(Path(".")))
    assert list(drift.columns) == workflows.DRIFT_OUTPUT_COLUMNS
    assert (drift["as_of_date"] == date.fromisoformat(AS_OF)).all()
    flagged = dict(zip(drift["feature"], drift["is_drifted"], strict=True))
    assert flagged == {"days_since_last_order": False, "orders_365d": False, "sessions_30d": True}


def test_clv_holdout_reports_the_spearman_ranking_against_future_revenue(tmp_path) -> None:
    """The holdout check refits on an older snapshot and ranks its customers' realized revenue."""
    holdout = clv_features(n_buyers=1500, n_nonbuyers=0, seed=3)
    rng = np.random.default_rng(4)
    rate = holdout["repeat_purchase_days"] / holdout["customer_tenure_days"]
    spend = holdout["repeat_average_value"].fillna(30.0)
    holdout["future_revenue"] = rng.poisson(rate * 365) * spend
    holdout["as_of_date"] = pd.Timestamp("2024-06-01")
    metrics = workflows.clv_holdout_metrics(holdout, config_at(tmp_path))
    assert metrics["holdout_as_of_date"] == "2024-06-01"
    assert metrics["holdout_customers"] == 1500
    # one-time buyers have no future revenue in this proxy but a positive CLV: a clear, not tight, ranking
    assert metrics["holdout_spearman_clv_vs_future_revenue"] > 0.3, metrics
    assert metrics["holdout_future_revenue_total"] == pytest.approx(holdout["future_revenue"].sum())


def test_clv_holdout_compares_predicted_and_actual_purchases_by_frequency(tmp_path) -> None:
    """With today's features, the holdout check records per calibration frequency the mean
    predicted and actual repeat purchase days since the snapshot (the report's FHL Fig. 3)."""
    holdout = clv_features(n_buyers=1500, n_nonbuyers=0, seed=3)
    holdout["as_of_date"] = pd.Timestamp("2023-06-01")
    holdout["purchase_days_total"] = holdout["repeat_purchase_days"] + 1
    rng = np.random.default_rng(5)
    gained = rng.poisson(holdout["repeat_purchase_days"] / holdout["customer_tenure_days"] * 334)
    holdout["future_revenue"] = gained * 10.0
    current = pd.DataFrame(
        {
            "customer_id": holdout["customer_id"],
            "purchase_days_total": holdout["purchase_days_total"] + gained,
        }
    )
    metrics = workflows.clv_holdout_metrics(holdout, config_at(tmp_path), current=current)
    assert metrics["holdout_days"] == (pd.Timestamp(AS_OF) - pd.Timestamp("2023-06-01")).days
    assert set(metrics["holdout_params"]) == {"r", "alpha", "a", "b"}
    rows = pd.DataFrame(metrics["holdout_by_frequency"])
    assert rows["customers"].sum() == 1500
    cap = metrics["holdout_frequency_cap"]
    x = holdout["repeat_purchase_days"].clip(upper=cap).astype(int)
    expected_actual = pd.Series(gained, index=holdout.index).groupby(x).mean()
    assert rows.set_index("frequency")["actual_mean"].to_dict() == pytest.approx(
        expected_actual.to_dict()
    )
    # Predictions rise with past frequency, as the actual purchases do.
    assert rows["predicted_mean"].iloc[-1] > rows["predicted_mean"].iloc[0]
