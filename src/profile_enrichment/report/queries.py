"""The report's numbers: small aggregates computed in SQL against the warehouse (read-only).

Every function takes an open DuckDB connection and returns a small pandas frame or dict (at
most a few thousand rows, whatever the number of customers), so the charts never see raw rows.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pandas as pd

PROPENSITY_MODELS = ("churn", "conversion")
# Grid of the ROC / precision-recall curves: probabilities are binned to this resolution.
CURVE_BINS = 1000


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    rows = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = 'main' and table_name = ?",
        [name],
    ).fetchone()
    return bool(rows and rows[0])


def frame(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pd.DataFrame:
    return con.execute(sql, params or []).df()


# --------------------------------------------------------------------------------------------
# overview
# --------------------------------------------------------------------------------------------
def overview(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """As-of date, event accounting, quarantine reasons and scored customers."""
    as_of = con.execute(
        "select cast(max(as_of_date) as varchar) from int_run_as_of_date"
    ).fetchone()
    counts = con.execute(
        "select count(*)::bigint, "
        "coalesce(sum(case when is_accepted then 1 else 0 end), 0)::bigint "
        "from int_events_validated"
    ).fetchone()
    reasons = frame(
        con,
        "select reason_code, count(*)::bigint as records from rejected_events "
        "group by 1 order by 2 desc, 1",
    )
    scored = con.execute(
        "select count(*)::bigint, "
        "count(churn_score)::bigint, count(conversion_score)::bigint, "
        "count(clv_expected_value)::bigint, count(segment_id)::bigint from profile_insights"
    ).fetchone()
    read, accepted = (int(v) for v in counts)
    return {
        "as_of_date": as_of[0] if as_of else None,
        "records_read": read,
        "accepted": accepted,
        "quarantined": read - accepted,
        "reasons": reasons,
        "profiles": int(scored[0]),
        "scored": {
            "churn": int(scored[1]),
            "conversion": int(scored[2]),
            "clv": int(scored[3]),
            "segments": int(scored[4]),
        },
    }


def registry(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every registry row, newest first within a model."""
    return frame(
        con,
        "select model_name, model_version, cast(as_of_date as varchar) as as_of_date, status, "
        "reason, n_train, n_valid, params_json, metrics_json, features_json, superseded_by "
        "from model_registry order by model_name, as_of_date desc, model_version",
    )


def model_decisions(reg: pd.DataFrame, as_of: str | None) -> pd.DataFrame:
    """Per model: the champion that scores, and what happened to this run's candidate."""
    rows = []
    for name in ("churn", "conversion", "clv", "segments"):
        entries = reg[reg["model_name"] == name]
        champion = entries[entries["status"] == "champion"]
        this_run = entries[entries["as_of_date"] == as_of]
        rejected = this_run[this_run["status"] == "rejected"]
        champ = champion.iloc[0] if not champion.empty else None
        if not rejected.empty:
            candidate = rejected.iloc[0]
            decision = "kept champion" if champ is not None else "nothing published"
            reason = candidate["reason"]
            version = candidate["model_version"]
        elif champ is not None and champ["as_of_date"] == as_of:
            decision, reason, version = "published", champ["reason"], champ["model_version"]
        elif champ is not None:
            decision = "reused champion"
            reason = "same training data, parameters and code: the champion was not retrained"
            version = champ["model_version"]
        else:
            decision, reason, version = "no model", "nothing was trained", ""
        rows.append(
            {
                "model": name,
                "champion": champ["model_version"] if champ is not None else "none",
                "champion_trained": champ["as_of_date"] if champ is not None else "",
                "this_run": version,
                "decision": decision,
                "reason": reason,
            }
        )
    return pd.DataFrame(rows)


def champion_entry(reg: pd.DataFrame, name: str) -> dict[str, Any] | None:
    champ = reg[(reg["model_name"] == name) & (reg["status"] == "champion")]
    if champ.empty:
        return None
    row = champ.iloc[0].to_dict()
    for key in ("params_json", "metrics_json", "features_json"):
        row[key.removesuffix("_json")] = json.loads(row[key]) if row[key] else {}
    return row


# --------------------------------------------------------------------------------------------
# propensity
# --------------------------------------------------------------------------------------------
def threshold_curve(con: duckdb.DuckDBPyConnection, model: str) -> pd.DataFrame:
    """ROC and precision-recall points: cumulative counts over descending probability bins."""
    return frame(
        con,
        f"""
        with bins as (
            select
                least(floor(probability * {CURVE_BINS}), {CURVE_BINS - 1})::int as bin,
                sum(case when is_positive then 1 else 0 end)::bigint as positives,
                sum(case when is_positive then 0 else 1 end)::bigint as negatives
            from propensity_validation_predictions
            where model_name = ?
            group by 1
        ),
        cumulative as (
            select
                bin,
                sum(positives) over (order by bin desc) as tp,
                sum(negatives) over (order by bin desc) as fp,
                sum(positives) over () as p,
                sum(negatives) over () as n
            from bins
        )
        select
            bin / {CURVE_BINS}::double as threshold,
            fp / nullif(n, 0)::double as fpr,
            tp / nullif(p, 0)::double as tpr,
            tp / nullif(tp + fp, 0)::double as precision,
            p / nullif(p + n, 0)::double as base_rate
        from cumulative
        order by bin desc
        """,
        [model],
    )


def percentiles(con: duckdb.DuckDBPyConnection, model: str) -> pd.DataFrame:
    """Per percentile of the validation rows by probability (1 = highest 1%): customers,
    positives and the sum of probabilities. Gains and decile lift are both read from it, so
    the rows are sorted once."""
    return frame(
        con,
        """
        with ranked as (
            select
                is_positive,
                probability,
                ntile(100) over (order by probability desc, customer_id) as pct
            from propensity_validation_predictions
            where model_name = ?
        )
        select
            pct,
            count(*)::bigint as customers,
            sum(case when is_positive then 1 else 0 end)::bigint as positives,
            sum(probability) as probability_sum
        from ranked
        group by 1
        order by 1
        """,
        [model],
    )


def gains(percentiles: pd.DataFrame) -> pd.DataFrame:
    """Cumulative share of positives captured by the top q% of customers (q = 1..100)."""
    total_pos = max(int(percentiles["positives"].sum()), 1)
    total = max(int(percentiles["customers"].sum()), 1)
    return pd.DataFrame(
        {
            "pct": percentiles["pct"],
            "captured": percentiles["positives"].cumsum() / total_pos,
            "targeted": percentiles["customers"].cumsum() / total,
        }
    )


def deciles(percentiles: pd.DataFrame) -> pd.DataFrame:
    """Per probability decile (1 = highest): rate, lift over the base rate, mean prediction."""
    grouped = (
        percentiles.assign(decile=(percentiles["pct"] - 1) // 10 + 1)
        .groupby("decile", as_index=False)[["customers", "positives", "probability_sum"]]
        .sum()
    )
    base = grouped["positives"].sum() / max(grouped["customers"].sum(), 1)
    grouped["observed_rate"] = grouped["positives"] / grouped["customers"]
    grouped["mean_probability"] = grouped["probability_sum"] / grouped["customers"]
    grouped["lift"] = grouped["observed_rate"] / base if base > 0 else float("nan")
    return grouped[["decile", "customers", "observed_rate", "mean_probability", "lift"]]


def score_distribution(con: duckdb.DuckDBPyConnection, model: str) -> pd.DataFrame:
    """Scored customers per score (0-100) and bucket."""
    return frame(
        con,
        f"select {model}_score as score, {model}_bucket as bucket, count(*)::bigint as customers "
        f"from {model}_propensity_scores group by 1, 2 order by 1",
    )


def top_factors(con: duckdb.DuckDBPyConnection, model: str, limit: int = 12) -> pd.DataFrame:
    """Share of scored customers for whom a feature is among their top 3 factors, by direction."""
    parts = " union all ".join(
        f"select {model}_factor_{k}_code as code, {model}_factor_{k}_direction as direction "
        f"from {model}_propensity_scores"
        for k in (1, 2, 3)
    )
    return frame(
        con,
        f"""
        with factors as ({parts}),
        total as (select count(*) as n from {model}_propensity_scores),
        counted as (
            select code,
                sum(case when direction = 'increases' then 1 else 0 end)::bigint as increases,
                sum(case when direction = 'decreases' then 1 else 0 end)::bigint as decreases
            from factors where code is not null group by 1
        )
        select code,
            increases / nullif((select n from total), 0)::double as share_increases,
            decreases / nullif((select n from total), 0)::double as share_decreases
        from counted
        order by increases + decreases desc, code
        limit {int(limit)}
        """,
    )


def example_profiles(con: duckdb.DuckDBPyConnection, model: str) -> pd.DataFrame:
    """Three customers (nearest the 95th, 50th and 5th percentile) with their top factors."""
    columns = ", ".join(
        f"{model}_factor_{k}_{part} as factor_{k}_{part}"
        for k in (1, 2, 3)
        for part in ("code", "value", "importance", "direction")
    )
    picks = " union all ".join(
        f"""(select {target} as target, customer_id,
                {model}_probability as probability, {model}_score as score,
                {model}_percentile as percentile, {model}_bucket as bucket, {columns}
            from {model}_propensity_scores
            order by abs({model}_percentile - {target}), customer_id
            limit 1)"""
        for target in (95, 50, 5)
    )
    return frame(con, f"select * from ({picks}) order by target desc")


# --------------------------------------------------------------------------------------------
# lifetime value
# --------------------------------------------------------------------------------------------
def clv_tracking_actual(con: duckdb.DuckDBPyConnection, cohort_end: str | None) -> pd.DataFrame:
    """Cumulative repeat purchase days, by snapshot date and at the as-of date, of the cohort
    whose first purchase is before ``cohort_end`` (all buyers when None)."""
    cohort = "" if cohort_end is None else f"and first_purchase_date < date '{cohort_end}'"
    return frame(
        con,
        f"""
        select as_of_date, sum(repeat_purchase_days)::bigint as repeat_purchases
        from customer_feature_snapshots
        where repeat_purchase_days is not null {cohort}
        group by 1
        union all
        select as_of_date, sum(repeat_purchase_days)::bigint
        from customer_features
        where repeat_purchase_days is not null {cohort}
        group by 1
        order by 1
        """,
    )


def clv_cohort(con: duckdb.DuckDBPyConnection, cohort_end: str | None) -> pd.DataFrame:
    """Buyers per first-purchase date (the cohort whose repeat purchases the model predicts)."""
    cohort = "" if cohort_end is None else f"and first_purchase_date < date '{cohort_end}'"
    return frame(
        con,
        f"select first_purchase_date, count(*)::bigint as customers from customer_features "
        f"where repeat_purchase_days is not null {cohort} group by 1 order by 1",
    )


def clv_alive_grid(con: duckdb.DuckDBPyConnection, cap: int = 15) -> pd.DataFrame:
    """Mean P(alive) over repeat frequency x recency month (age of the last repeat purchase)."""
    return frame(
        con,
        f"""
        select
            least(features.repeat_purchase_days, {cap})::int as frequency,
            floor(features.repeat_recency_days / 30.0)::int as recency_month,
            count(*)::bigint as customers,
            avg(values_.clv_probability_alive) as p_alive
        from customer_lifetime_values as values_
        inner join customer_features as features on values_.customer_id = features.customer_id
        group by 1, 2
        order by 1, 2
        """,
    )


def clv_histogram(con: duckdb.DuckDBPyConnection, bins: int = 40) -> pd.DataFrame:
    """Predicted CLV histogram: equal-width bins up to the 99th percentile, the rest in the last."""
    return frame(
        con,
        f"""
        with top as (
            select greatest(quantile_cont(clv_predicted_value, 0.99), 1e-9) as hi,
                any_value(clv_currency_code) as currency
            from customer_lifetime_values
        ),
        binned as (
            select least(floor(clv_predicted_value / (top.hi / {bins})), {bins} - 1)::int as bin
            from customer_lifetime_values cross join top
        )
        select bin, bin * (select hi from top) / {bins} as lower,
            (bin + 1) * (select hi from top) / {bins} as upper,
            count(*)::bigint as customers, (select currency from top) as currency
        from binned group by 1 order by 1
        """,
    )


def clv_summary(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    row = con.execute(
        "select count(*)::bigint, sum(clv_predicted_value), median(clv_predicted_value), "
        "avg(clv_probability_alive), any_value(clv_currency_code), any_value(clv_horizon_days) "
        "from customer_lifetime_values"
    ).fetchone()
    keys = ("customers", "total", "median", "mean_p_alive", "currency", "horizon_days")
    return dict(zip(keys, row, strict=True))


# --------------------------------------------------------------------------------------------
# segments, affinity, drift
# --------------------------------------------------------------------------------------------
def segment_sizes(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return frame(
        con,
        "select segment_id, segment_name, count(*)::bigint as customers "
        "from customer_segments group by 1, 2 order by 1",
    )


def segment_profiles(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per segment and segmentation feature: the mean as a z-score against all customers.

    One pass: per-segment count, sum and sum of squares of every feature; the population
    mean and standard deviation follow from those (a few rows, combined in pandas)."""
    features = [
        r[0]
        for r in con.execute(
            "select column_name from feature_catalog where is_segmentation_feature order by ordinal"
        ).fetchall()
    ]
    if not features:
        return pd.DataFrame(columns=["segment_id", "feature", "z", "mean", "order"])
    aggregates = ", ".join(
        f"count(features.{f})::double as n__{i}, sum(cast(features.{f} as double)) as s__{i}, "
        f"sum(cast(features.{f} as double) ^ 2) as q__{i}"
        for i, f in enumerate(features)
    )
    sums = frame(
        con,
        f"""
        select segments.segment_id, {aggregates}
        from customer_segments as segments
        inner join customer_features as features
            on segments.customer_id = features.customer_id
        group by 1
        order by 1
        """,
    )
    rows = []
    for i, feature in enumerate(features):
        n, total, squares = sums[f"n__{i}"], sums[f"s__{i}"], sums[f"q__{i}"]
        mean_all = total.sum() / max(n.sum(), 1)
        var_all = max(squares.sum() / max(n.sum(), 1) - mean_all**2, 0.0)
        sd_all = var_all**0.5
        for seg, n_seg, s_seg in zip(sums["segment_id"], n, total, strict=True):
            mean = s_seg / n_seg if n_seg else float("nan")
            z = (mean - mean_all) / sd_all if sd_all > 0 and n_seg else 0.0
            rows.append({"segment_id": seg, "feature": feature, "z": z, "mean": mean, "order": i})
    return pd.DataFrame(rows)


def category_popularity(con: duckdb.DuckDBPyConnection, limit: int = 15) -> pd.DataFrame:
    return frame(
        con,
        f"""
        select category_name,
            count(*)::bigint as in_top_n,
            sum(case when category_rank = 1 then 1 else 0 end)::bigint as ranked_first
        from customer_top_categories group by 1 order by 2 desc, 1 limit {int(limit)}
        """,
    )


def category_coaffinity(con: duckdb.DuckDBPyConnection, limit: int = 12) -> pd.DataFrame:
    """Lift of two categories appearing together in customers' top N (1 = independent).

    Customers are grouped by their (sorted) set of top categories first: there are few
    distinct sets, so the pairs are counted over sets, not over a self-join of all rows."""
    top = frame(
        con,
        f"select category_name, count(*)::bigint as n from customer_top_categories "
        f"group by 1 order by 2 desc, 1 limit {int(limit)}",
    )
    sets = frame(
        con,
        """
        with per_customer as (
            select customer_id, list_sort(list(category_name)) as categories
            from customer_top_categories group by 1
        )
        select categories, count(*)::bigint as customers from per_customer group by 1
        """,
    )
    customers = int(sets["customers"].sum()) if not sets.empty else 0
    keep = set(top["category_name"])
    counts: dict[tuple[str, str], int] = {}
    for categories, n in zip(sets["categories"], sets["customers"], strict=True):
        present = [c for c in categories if c in keep]
        for a in present:
            for b in present:
                if a != b:
                    counts[(a, b)] = counts.get((a, b), 0) + int(n)
    size = dict(zip(top["category_name"], top["n"], strict=True))
    rows = [
        {"category_a": a, "category_b": b, "lift": both * customers / (size[a] * size[b])}
        for (a, b), both in sorted(counts.items())
    ]
    return pd.DataFrame(rows, columns=["category_a", "category_b", "lift"])


def drift(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return frame(
        con,
        "select feature, psi, is_drifted, train_mean, score_mean, n_train, n_score "
        "from feature_drift order by psi desc nulls last, feature",
    )
