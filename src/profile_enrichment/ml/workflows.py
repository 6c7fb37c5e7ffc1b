"""What each dbt Python model does, end to end: train, gate through the registry, score.

The dbt models in ``python_models/ml`` only read relations and call one function here, so all
of this is unit-testable with pytest. Every function is deterministic for the same inputs:
model versions are content hashes, and nothing reads the wall clock.

Publishing rules (the "guardrails"): a new model version becomes champion only when it fits,
passes its checks and is not worse than the current champion; otherwise the champion keeps
scoring and the registry records the rejected version with the reason.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from profile_enrichment import __version__
from profile_enrichment.errors import ModelFitError, UserError

# Import every heavy dependency here, at module import. dbt runs Python models in parallel
# threads; two threads importing scikit-learn for the first time at once fail with
# "partially initialized module 'sklearn.base'". Importing this module is serialized by
# Python's import lock, so doing it all here makes the first import safe.
from profile_enrichment.ml import clv as _clv  # noqa: F401
from profile_enrichment.ml import drift as _drift  # noqa: F401
from profile_enrichment.ml import guardrails as _guardrails  # noqa: F401
from profile_enrichment.ml import propensity as _propensity  # noqa: F401
from profile_enrichment.ml import relations
from profile_enrichment.ml import segments as _segments  # noqa: F401
from profile_enrichment.ml.registry import (
    ModelRegistry,
    RegistryEntry,
    fingerprint_frame,
    model_version,
)

# The models read dbt.ref() through this, on DuckDB and Spark alike (see relations.py).
to_pandas = relations.to_pandas

CODE_VERSION = __version__


# --------------------------------------------------------------------------------------------
# configuration and small helpers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MLConfig:
    """Settings of the ML layer, filled from dbt vars (see python_models/ml/_ml__models.yml)."""

    artifacts_dir: Path
    as_of_date: str
    currency_code: str = "USD"
    clv_horizon_months: int = 12
    clv_discount_rate_monthly: float = 0.01
    clv_horizon_days: int = 365
    segment_k_min: int = 3
    segment_k_max: int = 7
    drift_psi_threshold: float = 0.2
    propensity_min_rows: int = 200
    propensity_metric_floor: float = 0.6
    propensity_champion_tolerance: float = 0.02
    propensity_bucket_high: int = 70
    propensity_bucket_medium: int = 30
    max_training_rows: int = 500_000
    models_at_once: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None, as_of_date: str) -> MLConfig:
        """Build from a dbt Python model's ``dbt.config.get("meta")``: the settings rendered
        from vars in python_models/ml/_ml__models.yml. (dbt finds config keys by reading the
        model's source for literal ``dbt.config.get("...")`` calls, so models must call it so.)"""
        meta = meta or {}

        def value(name: str, cast: Any, default: Any) -> Any:
            raw = meta.get(name)
            if raw is None or raw == "":
                return default
            try:
                return cast(raw)
            except (TypeError, ValueError) as err:
                raise UserError(f"dbt var {name} must be {cast.__name__}, got {raw!r}") from err

        artifacts = value("artifacts_dir", str, "data/artifacts")
        return cls(
            artifacts_dir=Path(artifacts),
            as_of_date=as_of_date,
            currency_code=value("currency_code", str, "USD"),
            clv_horizon_months=value("clv_horizon_months", int, 12),
            clv_discount_rate_monthly=value("clv_discount_rate_monthly", float, 0.01),
            clv_horizon_days=value("clv_horizon_days", int, 365),
            segment_k_min=value("segment_k_min", int, 3),
            segment_k_max=value("segment_k_max", int, 7),
            drift_psi_threshold=value("drift_psi_threshold", float, 0.2),
            propensity_min_rows=value("propensity_min_rows", int, 200),
            propensity_metric_floor=value("propensity_metric_floor", float, 0.6),
            propensity_champion_tolerance=value("propensity_champion_tolerance", float, 0.02),
            propensity_bucket_high=value("propensity_bucket_high", int, 70),
            propensity_bucket_medium=value("propensity_bucket_medium", int, 30),
            max_training_rows=value("ml_max_training_rows", int, 500_000),
            models_at_once=_at_least_one("ml_models_at_once", value("ml_models_at_once", int, 1)),
        )


def _at_least_one(name: str, number: int) -> int:
    if number < 1:
        raise UserError(f"dbt var {name} must be 1 or more, got {number}")
    return number


_SLOTS_GUARD = threading.Lock()
_SLOTS: dict[int, threading.BoundedSemaphore] = {}


@contextmanager
def memory_slot(config: MLConfig) -> Iterator[None]:
    """Hold one of var ``ml_models_at_once`` slots while a Python model has its frames in memory.

    dbt-duckdb runs Python models inside dbt's own process, one per dbt thread, and each one
    loads customer_features (and training examples) into pandas next to DuckDB's buffer pool.
    With dbt's 2 threads two of them used to train side by side: at 1M customers the dbt
    process peaked at 7.25 GB for churn and conversion together, against 4.35-4.48 GB for
    either alone. With one slot (the default) a second model waits here until the first has
    returned its output, so the peak is one model's. Every model uses the same slots because
    they all import this module, and the count comes from the same var.
    """
    with _SLOTS_GUARD:
        slots = _SLOTS.setdefault(
            config.models_at_once, threading.BoundedSemaphore(config.models_at_once)
        )
    with slots:
        yield


def bounded_rows(
    relation: Any, config: MLConfig, columns: str | Sequence[str] | None = None
) -> pd.DataFrame:
    """A relation of training examples (DuckDB or Spark) as a DataFrame, at most
    ~``max_training_rows``.

    Above the cap, whole customers are sampled (all their snapshots, chosen by a hash of
    customer_id, so the same data gives the same sample and per-customer folds stay intact)
    before anything reaches pandas. At 1M customers the snapshots hold ~10M rows x 80 columns:
    loading them all would take 6+ GB per Python model and minutes of fitting, for no gain in
    the models. Below the cap (the demo, the tests) every row is used, as before. ``columns``
    (names, or one comma-separated string) projects after sampling.
    """
    total = relations.row_count(relation)
    cap = config.max_training_rows
    if total > cap:
        relation = relations.hash_sample(relation, "customer_id", 1_000_000 * cap // total)
    return relations.to_pandas(relation, columns)


def latest_snapshot(relation: Any) -> pd.DataFrame:
    """The rows of ``relation`` at its latest as_of_date, filtered in the engine, not in pandas."""
    latest = relations.max_value(relation, "as_of_date")
    if latest is None:
        return relations.to_pandas(relations.empty(relation))
    return relations.to_pandas(
        relations.where(relation, f"as_of_date = date '{_date_str(latest)}'")
    )


def feature_lists(catalog: Any) -> tuple[list[str], list[str]]:
    """(model features, segmentation features) from the feature_catalog model, in YAML order."""
    catalog = relations.to_pandas(catalog)
    if catalog.empty:
        return [], []
    ordered = catalog.sort_values("ordinal")
    features = ordered.loc[ordered["is_feature"].astype(bool), "column_name"].tolist()
    segmentation = ordered.loc[
        ordered["is_segmentation_feature"].astype(bool), "column_name"
    ].tolist()
    return features, segmentation


def percentile_rank(values: pd.Series) -> pd.Series:
    """1-100 percentile among the given rows (100 = highest); ties share the lower rank."""
    n = len(values)
    if n == 0:
        return pd.Series([], dtype="int64", index=values.index)
    ranks = values.rank(method="min", ascending=True)
    return np.ceil(ranks / n * 100).clip(1, 100).astype("int64")


def _date_str(value: Any) -> str:
    return pd.Timestamp(value).date().isoformat()


def as_of_from(run_date: Any) -> str | None:
    """The run's as-of date (ISO) from the int_run_as_of_date relation.

    None when there is nothing to score: no accepted events (every record quarantined, or a
    `dbt build --empty` dry run). The models then return empty outputs (see empty_output),
    so the build still checks every schema and contract instead of failing.
    """
    run_date = relations.to_pandas(run_date)
    if run_date.empty or pd.isna(run_date["as_of_date"].iloc[0]):
        return None
    return _date_str(run_date["as_of_date"].iloc[0])


def open_registry(config: MLConfig) -> ModelRegistry:
    """The registry under the configured artifacts directory (created when missing)."""
    root = Path(config.artifacts_dir)
    root.mkdir(parents=True, exist_ok=True)
    return ModelRegistry(root)


def _publish_json_model(
    registry: ModelRegistry,
    name: str,
    version: str,
    artifact: Any,
    filename: str,
    config: MLConfig,
    **fields: Any,
) -> RegistryEntry:
    """Save a JSON artifact and register the version as champion (CLV and segments)."""
    path, sha = registry.save_artifact(name, version, artifact, filename=filename)
    return registry.register(
        RegistryEntry(
            model_name=name,
            model_version=version,
            as_of_date=config.as_of_date,
            training_window_end=config.as_of_date,
            status="champion",
            artifact_path=path,
            artifact_sha256=sha,
            **fields,
        )
    )


def _reject_fit(
    registry: ModelRegistry,
    name: str,
    version: str,
    config: MLConfig,
    err: Exception,
    **fields: Any,
) -> None:
    """Record a version that could not be fitted; the champion (if any) keeps scoring."""
    registry.register(
        RegistryEntry(
            model_name=name,
            model_version=version,
            as_of_date=config.as_of_date,
            status="rejected",
            reason=f"did not fit: {err}",
            **fields,
        )
    )


# --------------------------------------------------------------------------------------------
# lifetime value: BG/NBD + Gamma-Gamma
# --------------------------------------------------------------------------------------------
CLV_INPUTS = [
    "repeat_purchase_days",
    "repeat_recency_days",
    "customer_tenure_days",
    "repeat_average_value",
]
CLV_OUTPUT_COLUMNS = [
    "customer_id",
    "as_of_date",
    "clv_probability_alive",
    "clv_expected_purchases",
    "clv_expected_order_value",
    "clv_predicted_value",
    "clv_percentile",
    "clv_horizon_days",
    "clv_currency_code",
    "clv_model_version",
]


def _clv_frame(features: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ["customer_id", *CLV_INPUTS] if c not in features.columns]
    if missing:
        raise UserError(f"customer_features lacks the lifetime-value inputs {missing}")
    buyers = features[features["repeat_purchase_days"].notna()].copy()
    buyers = buyers.sort_values("customer_id", kind="mergesort").reset_index(drop=True)
    for column in CLV_INPUTS:
        buyers[column] = buyers[column].astype("float64")
    buyers["repeat_average_value"] = buyers["repeat_average_value"].fillna(0.0)
    return buyers


def fit_clv_models(buyers: pd.DataFrame) -> tuple[Any, Any]:
    """Fit BG/NBD on (x, t_x, T) in days and Gamma-Gamma on repeat spend."""
    from profile_enrichment.ml.clv import BetaGeoModel, GammaGammaModel

    if buyers.empty:
        raise ModelFitError("no customer has a purchase: lifetime value cannot be fitted")
    bg = BetaGeoModel(time_unit="days").fit(
        buyers["repeat_purchase_days"],
        buyers["repeat_recency_days"],
        buyers["customer_tenure_days"],
    )
    gg = GammaGammaModel().fit(buyers["repeat_purchase_days"], buyers["repeat_average_value"])
    return bg, gg


def _clv_models_from_params(params: Mapping[str, Any]) -> tuple[Any, Any]:
    """Rebuild fitted models from the parameters stored in the registry (no pickle needed)."""
    from profile_enrichment.ml.clv import BetaGeoModel, GammaGammaModel

    bg = BetaGeoModel(time_unit=str(params.get("time_unit", "days")))
    bg.r_, bg.alpha_, bg.a_, bg.b_ = (float(params[k]) for k in ("r", "alpha", "a", "b"))
    gg = GammaGammaModel()
    gg.p_, gg.q_, gg.v_ = (float(params[k]) for k in ("p", "q", "gamma"))
    return bg, gg


def predict_clv(bg: Any, gg: Any, buyers: pd.DataFrame, config: MLConfig) -> pd.DataFrame:
    """Per-buyer P(alive), expected purchases, expected order value and discounted CLV."""
    from profile_enrichment.ml.clv import customer_lifetime_value

    x = buyers["repeat_purchase_days"].to_numpy()
    t_x = buyers["repeat_recency_days"].to_numpy()
    age = buyers["customer_tenure_days"].to_numpy()
    m = buyers["repeat_average_value"].to_numpy()
    # Gamma-Gamma is fitted on positive spend only; a buyer whose repeat spend is not positive
    # (refunds) gets the population mean order value, like a one-time buyer.
    usable_spend = m > 0
    x_spend = np.where(usable_spend, x, 0)
    m = np.where(usable_spend, m, 0.0)
    out = pd.DataFrame({"customer_id": buyers["customer_id"].to_numpy()})
    out["clv_probability_alive"] = np.clip(bg.probability_alive(x, t_x, age), 0.0, 1.0)
    out["clv_expected_purchases"] = bg.expected_purchases(config.clv_horizon_days, x, t_x, age)
    out["clv_expected_order_value"] = gg.conditional_expected_average_profit(x_spend, m)
    out["clv_predicted_value"] = customer_lifetime_value(
        bg,
        gg,
        x,
        t_x,
        age,
        np.where(usable_spend, m, out["clv_expected_order_value"].to_numpy()),
        horizon_months=config.clv_horizon_months,
        discount_rate_monthly=config.clv_discount_rate_monthly,
    )
    return out


def run_clv(
    features: pd.DataFrame,
    registry: ModelRegistry,
    config: MLConfig,
    holdout: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Fit BG/NBD + Gamma-Gamma, gate it through the registry and score every buyer.

    ``holdout``: snapshot features joined with their matured ``future_revenue`` (optional).
    When given, a model refitted on that snapshot predicts CLV for its customers and the
    Spearman rank correlation with the revenue they really spent is recorded.
    Non-convergence keeps the champion's parameters; with no champion it is an error.
    """
    buyers = _clv_frame(features)
    if buyers.empty:
        return pd.DataFrame(columns=CLV_OUTPUT_COLUMNS)
    fingerprint = fingerprint_frame(buyers[["customer_id", *CLV_INPUTS]])
    settings = {
        "horizon_months": config.clv_horizon_months,
        "discount_rate_monthly": config.clv_discount_rate_monthly,
        "horizon_days": config.clv_horizon_days,
    }
    version = model_version(fingerprint, settings, CODE_VERSION)
    champion = registry.champion("clv")
    if champion is not None and champion.model_version == version:
        bg, gg = _clv_models_from_params(champion.params)
        used = champion
    else:
        try:
            bg, gg = fit_clv_models(buyers)
            spend = gg.params_dict()
            params = {
                **bg.params_dict(),
                "p": spend["p"],
                "q": spend["q"],
                "gamma": spend["v"],
                **settings,
            }
            metrics = {
                "log_likelihood_per_customer": float(bg.log_likelihood_ / max(len(buyers), 1)),
                "n_customers": len(buyers),
                "n_excluded_nonpositive_spend": int(getattr(gg, "n_excluded_nonpositive_", 0)),
            }
            if holdout is not None and not holdout.empty:
                try:
                    metrics.update(clv_holdout_metrics(holdout, config, current=features))
                except ModelFitError as err:
                    metrics["holdout_error"] = str(err)
            used = _publish_json_model(
                registry,
                "clv",
                version,
                params,
                "params.json",
                config,
                n_train=len(buyers),
                params=params,
                metrics=metrics,
                features=list(CLV_INPUTS),
                reason="fitted and converged",
            )
        except ModelFitError as err:
            _reject_fit(
                registry,
                "clv",
                version,
                config,
                err,
                n_train=len(buyers),
                features=list(CLV_INPUTS),
            )
            if champion is None:
                # Nothing was ever published: no lifetime values, and the registry says why.
                return pd.DataFrame(columns=CLV_OUTPUT_COLUMNS)
            bg, gg = _clv_models_from_params(champion.params)
            used = champion
    scores = predict_clv(bg, gg, buyers, config)
    scores["clv_percentile"] = percentile_rank(scores["clv_predicted_value"])
    scores["as_of_date"] = pd.Timestamp(config.as_of_date).date()
    scores["clv_horizon_days"] = int(config.clv_horizon_days)
    scores["clv_currency_code"] = config.currency_code
    scores["clv_model_version"] = used.model_version
    return scores[CLV_OUTPUT_COLUMNS]


def clv_holdout_metrics(
    holdout: pd.DataFrame, config: MLConfig, current: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Refit on an older snapshot and compare its CLV ranking with realized future revenue.

    With ``current`` (customer_features at the run's as-of date), also record what the model
    report draws in the style of Fader, Hardie & Lee (2005): the refit's parameters and, per
    calibration-period repeat frequency, the mean predicted and actual repeat purchase days
    between the snapshot and the as-of date (``holdout_by_frequency``).
    """
    from scipy.stats import spearmanr

    buyers = _clv_frame(holdout)
    buyers = buyers[buyers["future_revenue"].notna()]
    if len(buyers) < 10:
        return {}
    bg, gg = fit_clv_models(buyers)
    predicted = predict_clv(bg, gg, buyers, config)
    rho = spearmanr(predicted["clv_predicted_value"], buyers["future_revenue"]).statistic
    expected = float(predicted["clv_expected_purchases"].sum())
    extra: dict[str, Any] = {}
    if current is not None and "purchase_days_total" in buyers.columns:
        extra = _holdout_by_frequency(bg, buyers, current, config)
    return {
        **extra,
        "holdout_as_of_date": _date_str(holdout["as_of_date"].iloc[0]),
        "holdout_customers": len(buyers),
        "holdout_spearman_clv_vs_future_revenue": float(rho),
        "holdout_predicted_value_total": float(predicted["clv_predicted_value"].sum()),
        "holdout_future_revenue_total": float(buyers["future_revenue"].sum()),
        "holdout_expected_purchases_total": expected,
    }


def _holdout_by_frequency(
    bg: Any, buyers: pd.DataFrame, current: pd.DataFrame, config: MLConfig, cap: int = 7
) -> dict[str, Any]:
    """Predicted vs actual repeat purchase days in (snapshot, as-of], by calibration frequency."""
    snapshot = pd.Timestamp(buyers["as_of_date"].iloc[0])
    days = (pd.Timestamp(config.as_of_date) - snapshot).days
    if days <= 0 or "purchase_days_total" not in current.columns:
        return {}
    now = current.set_index("customer_id")["purchase_days_total"].astype("float64")
    then = buyers["purchase_days_total"].astype("float64").to_numpy()
    actual = now.reindex(buyers["customer_id"]).to_numpy() - then
    known = ~np.isnan(actual)
    x = buyers["repeat_purchase_days"].to_numpy()[known]
    predicted = bg.expected_purchases(
        days,
        x,
        buyers["repeat_recency_days"].to_numpy()[known],
        buyers["customer_tenure_days"].to_numpy()[known],
    )
    frame = pd.DataFrame(
        {"x": np.minimum(x, cap).astype(int), "actual": actual[known], "predicted": predicted}
    )
    rows = [
        {
            "frequency": int(k),
            "customers": len(g),
            "actual_mean": float(g["actual"].mean()),
            "predicted_mean": float(g["predicted"].mean()),
        }
        for k, g in frame.groupby("x", sort=True)
    ]
    params = bg.params_dict()
    return {
        "holdout_days": int(days),
        "holdout_params": {k: float(params[k]) for k in ("r", "alpha", "a", "b")},
        "holdout_by_frequency": rows,
        "holdout_frequency_cap": cap,
    }


# --------------------------------------------------------------------------------------------
# segments
# --------------------------------------------------------------------------------------------
SEGMENT_OUTPUT_COLUMNS = [
    "customer_id",
    "as_of_date",
    "segment_id",
    "segment_name",
    "segment_model_version",
]


def _segment_frame(features: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    frame = features[["customer_id", *columns]].copy()
    frame = frame.sort_values("customer_id", kind="mergesort").reset_index(drop=True)
    # Recency is undefined for customers who never bought: treat them as "as stale as their
    # whole history" rather than letting a median make them look typical.
    if "recency_days" in frame.columns and "tenure_days" in features.columns:
        tenure = features.set_index("customer_id").loc[frame["customer_id"], "tenure_days"]
        frame["recency_days"] = frame["recency_days"].fillna(pd.Series(tenure.to_numpy()))
    for column in columns:
        frame[column] = frame[column].astype("float64")
    return frame


def run_segments(
    features: pd.DataFrame,
    segmentation_features: list[str],
    registry: ModelRegistry,
    config: MLConfig,
) -> pd.DataFrame:
    """k-means segments on the tagged segmentation features, with ids stable across refreshes."""
    from profile_enrichment.ml.segments import SegmentModel

    if not segmentation_features:
        raise UserError(
            "no segmentation features: tag columns of customer_features with "
            "config.meta.segmentation: true"
        )
    frame = _segment_frame(features, segmentation_features)
    if frame.empty:
        return pd.DataFrame(columns=SEGMENT_OUTPUT_COLUMNS)
    settings = {"k_min": config.segment_k_min, "k_max": config.segment_k_max}
    version = model_version(
        fingerprint_frame(frame), {**settings, "features": segmentation_features}, CODE_VERSION
    )
    champion = registry.champion("segments")
    model = None
    if champion is not None and champion.model_version == version:
        model = SegmentModel.from_dict(registry.load_artifact_json(champion))
        used = champion
    else:
        previous = None
        if champion is not None:
            previous_model = SegmentModel.from_dict(registry.load_artifact_json(champion))
            if list(previous_model.feature_cols_) == list(segmentation_features):
                previous = previous_model.centroids_
        try:
            model = SegmentModel(k_min=config.segment_k_min, k_max=config.segment_k_max).fit(
                frame, segmentation_features, previous_centroids=previous
            )
            used = _publish_json_model(
                registry,
                "segments",
                version,
                model.to_dict(),
                "model.json",
                config,
                n_train=len(frame),
                params={**settings, "k": int(model.k_)},
                metrics={
                    "silhouette": float(model.silhouette_by_k_[model.k_]),
                    "silhouette_by_k": {
                        str(k): float(v) for k, v in model.silhouette_by_k_.items()
                    },
                },
                features=list(segmentation_features),
                reason=f"k={model.k_} chosen by silhouette",
            )
        except ModelFitError as err:
            _reject_fit(
                registry,
                "segments",
                version,
                config,
                err,
                n_train=len(frame),
                features=list(segmentation_features),
            )
            if champion is None:
                return pd.DataFrame(columns=SEGMENT_OUTPUT_COLUMNS)
            model = SegmentModel.from_dict(registry.load_artifact_json(champion))
            used = champion
    assigned = model.predict(frame)
    assigned["as_of_date"] = pd.Timestamp(config.as_of_date).date()
    assigned["segment_model_version"] = used.model_version
    assigned["segment_id"] = assigned["segment_id"].astype("int64")
    return assigned[SEGMENT_OUTPUT_COLUMNS]


# --------------------------------------------------------------------------------------------
# drift
# --------------------------------------------------------------------------------------------
DRIFT_OUTPUT_COLUMNS = [
    "as_of_date",
    "feature",
    "psi",
    "is_drifted",
    "train_mean",
    "score_mean",
    "n_train",
    "n_score",
]


def run_drift(
    training: pd.DataFrame, scoring: pd.DataFrame, features: list[str], config: MLConfig
) -> pd.DataFrame:
    """PSI per feature between the training snapshots and today's scoring population."""
    from profile_enrichment.ml.drift import feature_drift

    present = [f for f in features if f in training.columns and f in scoring.columns]
    drift = feature_drift(
        training[present].astype("float64"),
        scoring[present].astype("float64"),
        present,
        threshold=config.drift_psi_threshold,
    )
    drift.insert(0, "as_of_date", pd.Timestamp(config.as_of_date).date())
    return drift[DRIFT_OUTPUT_COLUMNS]


# --------------------------------------------------------------------------------------------
# registry as a table
# --------------------------------------------------------------------------------------------
REGISTRY_COLUMNS = [
    "model_name",
    "model_version",
    "as_of_date",
    "training_window_start",
    "training_window_end",
    "n_train",
    "n_valid",
    "params_json",
    "metrics_json",
    "features_json",
    "status",
    "reason",
    "artifact_path",
    "artifact_sha256",
    "superseded_by",
]


def registry_table(registry: ModelRegistry) -> pd.DataFrame:
    """The registry file as a table, one row per model version, JSON columns as text."""
    rows = []
    for entry in registry.entries():
        data = entry.to_dict()
        rows.append(
            {
                "model_name": data["model_name"],
                "model_version": data["model_version"],
                "as_of_date": data["as_of_date"],
                "training_window_start": data["training_window_start"],
                "training_window_end": data["training_window_end"],
                "n_train": int(data["n_train"]),
                "n_valid": int(data["n_valid"]),
                "params_json": json.dumps(data["params"], sort_keys=True),
                "metrics_json": json.dumps(data["metrics"], sort_keys=True),
                "features_json": json.dumps(data["features"]),
                "status": data["status"],
                "reason": data["reason"],
                "artifact_path": data["artifact_path"],
                "artifact_sha256": data["artifact_sha256"],
                "superseded_by": data["superseded_by"],
            }
        )
    frame = pd.DataFrame(rows, columns=REGISTRY_COLUMNS)
    for column in ("n_train", "n_valid"):
        frame[column] = frame[column].astype("int64")
    return frame


VALIDATION_COLUMNS = [
    "model_name",
    "model_version",
    "valid_as_of_date",
    "customer_id",
    "is_positive",
    "probability",
]


def propensity_validation_table(registry: ModelRegistry) -> pd.DataFrame:
    """The validation rows of each propensity champion: label and cross-fitted probability.

    These are the rows behind the champion's registry metrics, so the report's ROC, gains and
    calibration curves agree with them. A champion saved before the rows were recorded (or
    none at all) contributes nothing.
    """
    from profile_enrichment.ml.propensity import load_result

    frames = []
    for kind in PROPENSITY_LABELS:
        champion = registry.champion(kind)
        if champion is None or champion.artifact_path is None:
            continue
        result = load_result(
            Path(registry.root) / champion.artifact_path, str(champion.artifact_sha256)
        )
        rows = getattr(result, "validation_predictions", None)
        if rows is None or rows.empty:
            continue
        frame = rows[["customer_id", "is_positive", "probability"]].copy()
        frame.insert(0, "valid_as_of_date", pd.Timestamp(result.valid_as_of_date).date())
        frame.insert(0, "model_version", champion.model_version)
        frame.insert(0, "model_name", kind)
        frames.append(frame)
    if not frames:
        frame = pd.DataFrame({c: pd.Series(dtype="object") for c in VALIDATION_COLUMNS})
        frame["valid_as_of_date"] = frame["valid_as_of_date"].astype("datetime64[ns]")
        frame["is_positive"] = frame["is_positive"].astype("bool")
        frame["probability"] = frame["probability"].astype("float64")
        return frame
    out = pd.concat(frames, ignore_index=True)
    out["is_positive"] = out["is_positive"].astype("bool")
    out["probability"] = out["probability"].astype("float64")
    return out[VALIDATION_COLUMNS]


# --------------------------------------------------------------------------------------------
# propensity: churn and conversion
# --------------------------------------------------------------------------------------------
PROPENSITY_LABELS = {"churn": "is_churned", "conversion": "is_converted"}
# Who is scored (and trained on): churn among customers who have purchased, conversion among
# customers without an order in var recent_purchase_window_days.
PROPENSITY_POPULATIONS = {"churn": "has_purchased", "conversion": "is_conversion_eligible"}


def propensity_output_columns(n_factors: int = 3) -> list[str]:
    """Columns of a propensity model's output (the contracted marts rename them per model)."""
    from profile_enrichment.ml.propensity import scoring_columns

    base = scoring_columns(n_factors)
    return [base[0], "as_of_date", *base[1:], "factors_json", "model_version"]


def _propensity_config(config: MLConfig) -> Any:
    from profile_enrichment.ml.propensity import PropensityConfig

    return PropensityConfig(
        min_rows=config.propensity_min_rows,
        bucket_high=config.propensity_bucket_high,
        bucket_medium=config.propensity_bucket_medium,
    )


_FACTOR_PARTS = ("code", "value", "importance", "direction")
_FACTORS_ENCODER = json.JSONEncoder(sort_keys=True)  # what json.dumps(..., sort_keys=True) does


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _factors_json(scores: pd.DataFrame, n_factors: int = 3) -> list[str | None]:
    """The top factors of each row as a JSON array (keys with no value are left out).

    Reads the 4 x ``n_factors`` factor columns as Python lists once: converting the whole
    frame to records took 10 of the 21 s this cost for 650k customers.
    """
    columns = [
        scores[f"factor_{k}_{part}"].tolist()
        for k in range(1, n_factors + 1)
        for part in _FACTOR_PARTS
    ]
    encode = _FACTORS_ENCODER.encode
    out: list[str | None] = []
    for row in zip(*columns, strict=True):
        factors = []
        for start in range(0, len(row), len(_FACTOR_PARTS)):
            code, value, importance, direction = row[start : start + len(_FACTOR_PARTS)]
            if _is_missing(code):
                continue
            factor = {"code": code, "importance": importance, "direction": direction}
            if not _is_missing(value):
                factor["value"] = round(float(value), 6)
            factors.append(factor)
        out.append(encode(factors) if factors else None)
    return out


def evaluate_propensity(result: Any, frame: pd.DataFrame, label_col: str) -> dict[str, float]:
    """ROC AUC, PR AUC and Brier of a fitted result on labelled rows (for champion checks)."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    labelled = frame[frame[label_col].notna()]
    y = labelled[label_col].astype(bool).to_numpy()
    if labelled.empty or y.all() or not y.any():
        return {}
    X = labelled[list(result.feature_cols)].astype("float64").to_numpy()
    p = result.probability_from_margin(result.margin(X))
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
    }


def run_propensity(
    kind: str,
    training: pd.DataFrame,
    scoring: pd.DataFrame,
    features: list[str],
    registry: ModelRegistry,
    config: MLConfig,
) -> pd.DataFrame:
    """Train a churn or conversion model, publish it only if it earns it, score with the champion.

    ``training``: matured snapshot rows of the model's population (features + label + as_of_date).
    ``scoring``: customer_features at the run's as-of date (filtered here to the population).
    A candidate is rejected (and the champion keeps scoring) when its training data is
    degenerate, it falls below var propensity_metric_floor, or it is worse than the champion by
    more than var propensity_champion_tolerance on the same validation snapshot.
    """
    from threadpoolctl import threadpool_limits

    if kind not in PROPENSITY_LABELS:
        raise UserError(f"unknown propensity model {kind!r}")
    # dbt runs models in parallel threads on few cores: one OpenMP thread per model avoids
    # oversubscription, which made gradient boosting 10-50x slower on 2 shared cores.
    with threadpool_limits(limits=1, user_api="openmp"):
        return _run_propensity(kind, training, scoring, features, registry, config)


def _run_propensity(
    kind: str,
    training: pd.DataFrame,
    scoring: pd.DataFrame,
    features: list[str],
    registry: ModelRegistry,
    config: MLConfig,
) -> pd.DataFrame:
    from profile_enrichment.ml.guardrails import check_training_data, publish_decision
    from profile_enrichment.ml.propensity import (
        load_result,
        save_result,
        score_propensity,
        train_propensity,
    )

    label = PROPENSITY_LABELS[kind]
    population = PROPENSITY_POPULATIONS[kind]
    if not features:
        raise UserError(
            "no model features: tag columns of customer_features with config.meta.feature: true"
        )
    columns = propensity_output_columns()
    missing = [f for f in features if f not in training.columns]
    if missing:
        raise UserError(
            f"{kind}: features tagged in customer_features YAML are missing from the training "
            f"data: {missing}",
            hint="rebuild the snapshots (dbt build --full-refresh --select customer_feature_snapshots+)",
        )
    scoring = scoring[scoring[population].astype(bool)] if not scoring.empty else scoring
    scoring = scoring.sort_values("customer_id", kind="mergesort").reset_index(drop=True)
    training = training[training[label].notna()]
    training = training.sort_values(["as_of_date", "customer_id"], kind="mergesort").reset_index(
        drop=True
    )
    prop_config = _propensity_config(config)
    params = {
        "kind": kind,
        "label": label,
        "features": features,
        "min_rows": config.propensity_min_rows,
        "buckets": [config.propensity_bucket_medium, config.propensity_bucket_high],
    }
    fingerprint = fingerprint_frame(training[["customer_id", "as_of_date", label, *features]])
    version = model_version(fingerprint, params, CODE_VERSION)
    champion = registry.champion(kind)
    dates = sorted({_date_str(d) for d in training["as_of_date"]}) if not training.empty else []

    def entry(status: str, reason: str, **extra: Any) -> RegistryEntry:
        return RegistryEntry(
            model_name=kind,
            model_version=version,
            as_of_date=config.as_of_date,
            training_window_start=dates[0] if dates else None,
            training_window_end=dates[-1] if dates else None,
            params=params,
            features=list(features),
            status=status,
            reason=reason,
            **extra,
        )

    result = None
    used: RegistryEntry | None = None
    if champion is not None and champion.model_version == version:
        used = champion
    else:
        report = check_training_data(training, features, label, config.propensity_min_rows)
        if not report.ok:
            registry.register(
                entry(
                    "rejected",
                    "degenerate training data: " + "; ".join(report.reasons),
                    n_train=len(training),
                )
            )
        else:
            usable = [f for f in features if f not in set(report.dropped_features)]
            try:
                result = train_propensity(training, usable, label, prop_config)
            except ModelFitError as err:
                registry.register(entry("rejected", f"did not fit: {err}", n_train=len(training)))
                result = None
            if result is not None:
                metrics = dict(result.metrics)
                champion_metrics = None
                if champion is not None:
                    champion_metrics = _champion_metrics_on(
                        registry, champion, training, label, metrics
                    )
                publish, reason = publish_decision(
                    metrics,
                    champion_metrics,
                    metric="roc_auc",
                    floor=config.propensity_metric_floor,
                    tolerance=config.propensity_champion_tolerance,
                )
                if champion is not None and champion_metrics is None:
                    reason = (
                        f"{reason}; the champion {champion.model_version} could not be compared "
                        "(its features are no longer all available), so it was not a hurdle"
                    )
                if report.dropped_features:
                    reason += (
                        f" (dropped constant/empty features: {', '.join(report.dropped_features)})"
                    )
                artifact = Path(config.artifacts_dir) / kind / version / "model.pkl"
                artifact.parent.mkdir(parents=True, exist_ok=True)
                sha = save_result(result, artifact)
                stored = registry.register(
                    entry(
                        "champion" if publish else "rejected",
                        reason,
                        n_train=int(metrics.get("n_train", 0)),
                        n_valid=int(metrics.get("n_valid", 0)),
                        metrics={**metrics, "champion_comparison": champion_metrics or {}},
                        artifact_path=artifact.relative_to(config.artifacts_dir).as_posix(),
                        artifact_sha256=sha,
                    )
                )
                if publish:
                    used = stored
                else:
                    result = None
        if used is None:
            used = champion
    if used is None:
        # Nothing was ever published: no scores, and the registry says why.
        return pd.DataFrame(columns=columns)
    if result is None:
        result = load_result(
            Path(config.artifacts_dir) / str(used.artifact_path), str(used.artifact_sha256)
        )
    if scoring.empty:
        return pd.DataFrame(columns=columns)
    missing = [f for f in result.feature_cols if f not in scoring.columns]
    if missing:
        raise UserError(
            f"the {kind} champion {used.model_version} needs features that are gone: {missing}",
            hint="restore the columns, or retrain by removing its registry row",
        )
    scores = score_propensity(result, scoring)
    scores["as_of_date"] = pd.Timestamp(config.as_of_date).date()
    scores["factors_json"] = _factors_json(scores)
    scores["model_version"] = used.model_version
    return scores[columns]


def _champion_metrics_on(
    registry: ModelRegistry,
    champion: RegistryEntry,
    training: pd.DataFrame,
    label: str,
    candidate_metrics: Mapping[str, Any],
) -> dict[str, float] | None:
    """The champion's metrics on the candidate's validation snapshot, so both are compared on
    the same rows. If the champion was validated on that same snapshot, its recorded
    (cross-fitted) metrics are the like-for-like comparison."""
    from profile_enrichment.ml.propensity import load_result

    valid_date = candidate_metrics.get("valid_as_of_date")
    if champion.metrics.get("valid_as_of_date") == valid_date:
        return {k: v for k, v in champion.metrics.items() if isinstance(v, int | float)}
    if champion.artifact_path is None:
        return None
    result = load_result(
        Path(registry.root) / champion.artifact_path, str(champion.artifact_sha256)
    )
    valid = training[training["as_of_date"].map(_date_str) == valid_date]
    if any(f not in valid.columns for f in result.feature_cols):
        return None
    return evaluate_propensity(result, valid, label) or None


# --------------------------------------------------------------------------------------------
# champions compiled to SQL (ml/sql_scoring, ml/sql_clv)
# --------------------------------------------------------------------------------------------
# The relation a compiled scorer reads; the dbt model puts the scoring population there.
SCORING_RELATION = "__SCORING_POPULATION__"
COMPILED_SCORING_COLUMNS = [
    "model_name",
    "model_version",
    "dialect",
    "population_column",
    "model_kind",
    "calibration",
    "feature_columns",
    "scoring_sql",
    "sql_sha256",
]


def compiled_champions(
    registry: ModelRegistry, artifacts_dir: Path | str, dialects: Sequence[str] | None = None
) -> pd.DataFrame:
    """Every champion compiled to one SQL ``SELECT`` per engine: churn and conversion
    (ml/sql_scoring: margin, calibration, score, percentile, bucket) and the closed-form part
    of lifetime value (ml/sql_clv: P(alive), expected order value).

    propensity_scores_in_sql and clv_scores_in_sql run them inside the warehouse, so an
    engine without Python (PostgreSQL) scores with the champions trained where Python runs.
    A scorer reads ``SCORING_RELATION``, which the model replaces with the population's rows.
    No champion yet: no row (the SQL model is then empty, as the Python scores are).
    """
    import hashlib

    from profile_enrichment.ml.propensity import load_result
    from profile_enrichment.ml.sql_clv import clv_select_sql
    from profile_enrichment.ml.sql_scoring import DIALECTS, compile_scoring

    dialects = tuple(DIALECTS) if dialects is None else tuple(dialects)
    rows = []
    for kind in sorted(PROPENSITY_LABELS):
        champion = registry.champion(kind)
        if champion is None:
            continue
        result = load_result(
            Path(artifacts_dir) / str(champion.artifact_path), str(champion.artifact_sha256)
        )
        for dialect in dialects:
            compiled = compile_scoring(result, dialect, SCORING_RELATION)
            rows.append(
                {
                    "model_name": kind,
                    "model_version": champion.model_version,
                    "dialect": compiled.dialect,
                    "population_column": PROPENSITY_POPULATIONS[kind],
                    "model_kind": compiled.model_kind,
                    "calibration": compiled.calibration,
                    "feature_columns": ",".join(compiled.feature_cols),
                    "scoring_sql": compiled.sql,
                    "sql_sha256": compiled.sql_sha256,
                }
            )
    clv = registry.champion("clv")
    for dialect in dialects if clv is not None else ():
        sql = clv_select_sql(clv.params, dialect, SCORING_RELATION)
        rows.append(
            {
                "model_name": "clv",
                "model_version": clv.model_version,
                "dialect": dialect,
                "population_column": "has_purchased",
                "model_kind": "bg_nbd_gamma_gamma",
                "calibration": "none",
                "feature_columns": ",".join(CLV_INPUTS),
                "scoring_sql": sql,
                "sql_sha256": hashlib.sha256(sql.encode("utf-8")).hexdigest(),
            }
        )
    return pd.DataFrame(rows, columns=COMPILED_SCORING_COLUMNS).astype("string")


# --------------------------------------------------------------------------------------------
# empty outputs (no accepted events, or dbt build --empty)
# --------------------------------------------------------------------------------------------
def empty_output(model: str) -> pd.DataFrame:
    """A typed, empty output for a Python model when there is nothing to score."""
    numeric = {
        "clv_probability_alive",
        "clv_expected_purchases",
        "clv_expected_order_value",
        "clv_predicted_value",
        "probability",
        "psi",
        "train_mean",
        "score_mean",
        "factor_1_value",
        "factor_2_value",
        "factor_3_value",
    }
    integer = {
        "clv_percentile",
        "clv_horizon_days",
        "segment_id",
        "score",
        "percentile",
        "n_train",
        "n_valid",
        "n_score",
    }
    columns = {
        "ml_clv_scores": CLV_OUTPUT_COLUMNS,
        "ml_segments": SEGMENT_OUTPUT_COLUMNS,
        "ml_churn_scores": propensity_output_columns(),
        "ml_conversion_scores": propensity_output_columns(),
        "ml_feature_drift": DRIFT_OUTPUT_COLUMNS,
    }[model]
    frame = pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    for column in columns:
        if column in numeric:
            frame[column] = frame[column].astype("float64")
        elif column in integer:
            frame[column] = frame[column].astype("int64")
        elif column == "as_of_date":
            frame[column] = frame[column].astype("datetime64[ns]")
        elif column == "is_drifted":
            frame[column] = frame[column].astype("bool")
    return frame
