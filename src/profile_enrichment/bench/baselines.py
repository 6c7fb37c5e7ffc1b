"""The references the benchmark measures the pipeline against, each run in its own process.

* ``raw-duckdb``: one DuckDB connection and hand-written SQL over the same event files: RFM,
  category affinity counts and RFM snapshots at the same as-of dates. It skips what the
  pipeline adds on top (quarantine, identity stitching, sessions, windows, decay), so the ratio
  is the price of those plus dbt's own overhead.
* ``pandas``: the same RFM the way a notebook would write it (read the purchases, group by).
* ``lifetimes``: ``BetaGeoFitter`` + ``GammaGammaFitter`` on the same (frequency, recency, T,
  monetary) the pipeline's lifetime-value model reads from ``customer_features``, timed against
  :func:`profile_enrichment.ml.workflows.fit_clv_models` in the same process.

Usage: ``python -m profile_enrichment.bench.baselines NAME --raw DIR ...``; the last stdout
line is a JSON object with the timings (seconds, measured inside the process) and the outputs'
sizes, so the harness can compare like with like. ``lifetimes`` is a bench-only dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

PERSON_ID_SQL = """coalesce(
            'CRMID:' || identityMap['CRMID'][1].id,
            'Email_LC_SHA256:' || identityMap['Email_LC_SHA256'][1].id,
            'ECID:' || identityMap['ECID'][1].id
        )"""


def _connect(database: str = ":memory:", read_only: bool = False):
    import duckdb

    con = duckdb.connect(database, read_only=read_only)
    con.execute("set TimeZone = 'UTC'")
    limit = os.environ.get("PE_DUCKDB_MEMORY_LIMIT")
    if limit:
        con.execute(f"set memory_limit = '{limit}'")
    return con


def _events_glob(raw: Path) -> str:
    return str(raw / "events" / "*.parquet")


def raw_duckdb(raw: Path, as_of_dates: list[str]) -> dict[str, Any]:
    """RFM, category affinity counts and RFM snapshots, hand-written, one connection."""
    con = _connect()
    run_as_of = max(as_of_dates)
    dates_sql = ", ".join(f"(date '{d}')" for d in sorted(as_of_dates))
    started = time.perf_counter()
    con.execute(
        f"""
        create temp table events as
        select
            {PERSON_ID_SQL} as customer_id,
            cast(cast("timestamp" as timestamptz) as date) as event_date,
            eventType as event_type,
            commerce."order".purchaseID as purchase_id,
            commerce."order".priceTotal as order_total,
            productListItems as items
        from read_parquet('{_events_glob(raw)}')
        """
    )
    con.execute(
        """
        create temp table daily_purchases as
        select
            customer_id,
            event_date,
            count(distinct purchase_id) as orders,
            sum(order_total) as revenue
        from events
        where event_type = 'commerce.purchases'
        group by all
        """
    )
    rfm_sql = """
        select
            dates.as_of_date,
            daily.customer_id,
            sum(daily.orders) as orders_total,
            sum(daily.revenue) as revenue_total,
            min(daily.event_date) as first_purchase_date,
            max(daily.event_date) as last_purchase_date,
            datediff('day', max(daily.event_date), dates.as_of_date) as recency_days
        from daily_purchases as daily
        inner join ({dates}) as dates (as_of_date) on daily.event_date < dates.as_of_date
        group by dates.as_of_date, daily.customer_id
    """
    rfm = con.sql(rfm_sql.format(dates=f"values (date '{run_as_of}')")).to_arrow_table()
    affinity = con.sql(
        f"""
        with lines as (
            select customer_id, event_type, unnest(items).productCategories as categories
            from events
            where event_date < date '{run_as_of}' and items is not null
        ),
        categories as (
            select customer_id, event_type, unnest(categories).categoryID as category_id
            from lines
        )
        select
            customer_id,
            category_id,
            count(*) filter (where event_type = 'commerce.productViews') as product_views,
            count(*) filter (where event_type = 'commerce.productListAdds') as cart_adds,
            count(*) filter (where event_type = 'commerce.purchases') as purchases
        from categories
        group by all
        """
    ).to_arrow_table()
    snapshots = con.sql(rfm_sql.format(dates=f"values {dates_sql}")).to_arrow_table()
    seconds = time.perf_counter() - started
    events = con.sql("select count(*) from events").fetchall()[0][0]
    return {
        "seconds": seconds,
        "events": int(events),
        "rfm_rows": rfm.num_rows,
        "affinity_rows": affinity.num_rows,
        "snapshot_rows": snapshots.num_rows,
        "as_of_dates": len(as_of_dates),
    }


def pandas_rfm(raw: Path, as_of: str) -> dict[str, Any]:
    """The same RFM as a notebook would compute it: read the purchases, then group by."""
    import pandas as pd

    started = time.perf_counter()
    files = sorted((raw / "events").glob("*.parquet"))
    frames = [
        pd.read_parquet(
            path,
            columns=["timestamp", "eventType", "identityMap", "commerce"],
            filters=[("eventType", "==", "commerce.purchases")],
        )
        for path in files
    ]
    df = pd.concat(frames, ignore_index=True)

    def person(identity_map) -> str:
        ids = dict(identity_map)
        for namespace in ("CRMID", "Email_LC_SHA256", "ECID"):
            if ids.get(namespace) is not None and len(ids[namespace]):
                return f"{namespace}:{ids[namespace][0]['id']}"
        return ""

    df["customer_id"] = df["identityMap"].map(person)
    df["event_date"] = pd.to_datetime(df["timestamp"], utc=True).dt.tz_localize(None).dt.floor("D")
    df["purchase_id"] = df["commerce"].map(lambda c: c["order"]["purchaseID"])
    df["order_total"] = df["commerce"].map(lambda c: c["order"]["priceTotal"])
    cutoff = pd.Timestamp(as_of)
    df = df[df["event_date"] < cutoff]
    rfm = df.groupby("customer_id").agg(
        orders_total=("purchase_id", "nunique"),
        revenue_total=("order_total", "sum"),
        first_purchase_date=("event_date", "min"),
        last_purchase_date=("event_date", "max"),
    )
    rfm["recency_days"] = (cutoff - rfm["last_purchase_date"]).dt.days
    return {"seconds": time.perf_counter() - started, "rfm_rows": len(rfm), "purchases": len(df)}


def lifetimes_fit(warehouse: Path) -> dict[str, Any]:
    """Fit BG/NBD + Gamma-Gamma with ours and with lifetimes on the same customers."""
    import numpy as np
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    from profile_enrichment.ml.workflows import _clv_frame, fit_clv_models

    con = _connect(str(warehouse), read_only=True)
    try:
        features = con.sql("select * from customer_features").df()
    finally:
        con.close()
    buyers = _clv_frame(features)
    x = buyers["repeat_purchase_days"].to_numpy(np.float64)
    t_x = buyers["repeat_recency_days"].to_numpy(np.float64)
    age = buyers["customer_tenure_days"].to_numpy(np.float64)
    m = buyers["repeat_average_value"].to_numpy(np.float64)

    started = time.perf_counter()
    bg, gg = fit_clv_models(buyers)
    ours_seconds = time.perf_counter() - started

    started = time.perf_counter()
    ref_bg = BetaGeoFitter(penalizer_coef=0.0).fit(x, t_x, age)
    repeat = (x > 0) & (m > 0)
    ref_gg = GammaGammaFitter(penalizer_coef=0.0).fit(x[repeat], m[repeat])
    ref_seconds = time.perf_counter() - started

    ours = {"r": bg.r_, "alpha": bg.alpha_, "a": bg.a_, "b": bg.b_}
    ours |= {"p": gg.p_, "q": gg.q_, "v": gg.v_}
    ref = {k: float(ref_bg.params_[k]) for k in ("r", "alpha", "a", "b")}
    ref |= {k: float(ref_gg.params_[k]) for k in ("p", "q", "v")}
    rel = {k: abs(ours[k] - ref[k]) / abs(ref[k]) for k in ours}
    return {
        "seconds": ref_seconds,
        "ours_seconds": ours_seconds,
        "customers": len(buyers),
        "repeat_customers": int(repeat.sum()),
        "params_ours": ours,
        "params_lifetimes": ref,
        "max_relative_param_difference": max(rel.values()),
        "relative_param_difference": rel,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m profile_enrichment.bench.baselines")
    parser.add_argument("name", choices=["raw-duckdb", "pandas", "lifetimes"])
    parser.add_argument("--raw", type=Path, help="raw folder with events/")
    parser.add_argument("--warehouse", type=Path, help="the pipeline's DuckDB file (lifetimes)")
    parser.add_argument("--as-of", action="append", default=[], help="as-of date (repeatable)")
    args = parser.parse_args(argv)
    if args.name == "raw-duckdb":
        result = raw_duckdb(args.raw, args.as_of)
    elif args.name == "pandas":
        result = pandas_rfm(args.raw, max(args.as_of))
    else:
        result = lifetimes_fit(args.warehouse)
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
