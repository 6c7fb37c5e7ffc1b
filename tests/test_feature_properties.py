"""Property tests: the feature SQL against a short, obviously correct Python reference.

The SQL under test is the project's own, compiled once by dbt (`dbt compile --target ci`):
int_events_sessionized, int_identity_daily_activity (the daily rollup), int_identity_links and
customer_features (RFM, windowed sums, trends, recency; macros/features/). For each random
small event set, hypothesis fills the upstream relations (int_events_accepted and
stg_aep__event_identities, under the names the compiled SQL reads) in an in-memory DuckDB, runs
the compiled models in order, and compares every row with `reference_*` below, computed
straight from the events. Editing the SQL (or a var's default) is tested; nothing is copied.

The strategies aim at the edges: events exactly at window boundaries (as-of date minus N days,
minus N + 1, and the as-of date itself, which a feature must not see), several events with the
same timestamp, single-event customers, anonymous ECIDs stitched to a CRMID on a given day, and
one or two as-of dates at once (the path the training snapshots take).
"""

from __future__ import annotations

import csv
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

import duckdb
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import PROJECT_DIR, run_dbt

pytestmark = pytest.mark.dbt

VARS = yaml.safe_load((PROJECT_DIR / "dbt_project.yml").read_text(encoding="utf-8"))["vars"]
WINDOWS: list[int] = VARS["feature_windows_days"]
TREND: int = VARS["trend_window_days"]
RECENT: int = VARS["recent_purchase_window_days"]
TIMEOUT: int = VARS["session_timeout_seconds"]
MODELS = {  # compiled in this order; each is created under its own name
    "int_events_sessionized": "models/intermediate/sessions/int_events_sessionized.sql",
    "int_identity_daily_activity": "models/intermediate/activity/int_identity_daily_activity.sql",
    "int_identity_links": "models/intermediate/identity/int_identity_links.sql",
    "customer_features": "models/marts/features/customer_features.sql",
}
SEEDS = ["identity_namespaces", "rfm_segment_map"]
GROUPS = {
    "page_view": "web.webpagedetails.pageViews",
    "product_view": "commerce.productViews",
    "cart_add": "commerce.productListAdds",
    "checkout": "commerce.checkouts",
    "purchase": "commerce.purchases",
    "email_open": "directMarketing.emailOpened",
    "email_click": "directMarketing.emailClicked",
}
WEB = {"page_view", "product_view", "cart_add", "checkout"}  # a "visit" (last_visit_date)
EMAIL = {"email_open", "email_click"}  # not part of any session
COUNTED = {  # windowed count measures and the event group each one counts
    "page_views": "page_view",
    "product_views": "product_view",
    "cart_adds": "cart_add",
    "checkouts": "checkout",
    "email_opens": "email_open",
    "email_clicks": "email_click",
}
BASE = date(2024, 6, 1)
IDENTITIES = ["CRMID:C0", "CRMID:C1", "ECID:E2", "ECID:E3"]


# ----------------------------------------------------------------------------------------------
# the events
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    event_id: str
    identity: str  # the event's own best identity (int_events_accepted.identity_key)
    alias: str | None  # an ECID seen on the same event as a CRMID (links them from that day)
    group: str
    at: datetime  # UTC, whole seconds
    revenue: Decimal | None = None  # purchases only

    @property
    def day(self) -> date:
        return self.at.date()


def _boundary_offsets() -> list[int]:
    """Days relative to an as-of date that sit on or next to a window edge."""
    edges = {0, 1, 2 * TREND, RECENT, *WINDOWS}
    return sorted({-e + d for e in edges for d in (-1, 0, 1)})


SECONDS = st.one_of(  # a small pool, so events often share a timestamp or sit at a timeout edge
    st.sampled_from([0, 36_000, 36_000 + TIMEOUT - 1, 36_000 + TIMEOUT, 86_399]),
    st.integers(0, 86_399),
)


@st.composite
def event_sets(draw: st.DrawFn) -> tuple[list[date], list[Event]]:
    offsets = draw(st.lists(st.integers(-3, 3), min_size=1, max_size=2, unique=True))
    as_ofs = sorted(BASE + timedelta(days=o) for o in offsets)
    events = []
    for number in range(draw(st.integers(1, 20))):
        identity = draw(st.sampled_from(IDENTITIES))
        alias = draw(st.sampled_from([None, "ECID:E2", "ECID:E3"])) if "CRMID" in identity else None
        anchor = draw(st.sampled_from(as_ofs))
        day = anchor + timedelta(
            days=draw(st.one_of(st.sampled_from(_boundary_offsets()), st.integers(-400, 3)))
        )
        at = datetime(day.year, day.month, day.day) + timedelta(seconds=draw(SECONDS))
        group = draw(st.sampled_from(sorted(GROUPS)))
        revenue = None
        if group == "purchase":
            revenue = Decimal(draw(st.integers(0, 99_999))) / 100
        events.append(Event(f"e{number:03d}", identity, alias, group, at, revenue))
    return as_ofs, events


def _at(day: date, seconds: int = 36_000) -> datetime:
    return datetime(day.year, day.month, day.day) + timedelta(seconds=seconds)


# Hand-picked sets that must always run, whatever hypothesis draws.
SINGLE_EVENT_CUSTOMER = (
    [BASE],
    [Event("e000", "CRMID:C0", None, "purchase", _at(BASE - timedelta(days=1)), Decimal("9.99"))],
)
SAME_TIMESTAMP = (
    [BASE],
    [
        Event(f"e{n:03d}", "CRMID:C0", None, group, _at(BASE - timedelta(days=3)), revenue)
        for n, (group, revenue) in enumerate(
            [("page_view", None), ("purchase", Decimal("5")), ("purchase", Decimal("0.10"))]
        )
    ],
)
AT_EVERY_BOUNDARY = (
    [BASE, BASE + timedelta(days=1)],
    [
        Event(
            f"e{n:03d}",
            IDENTITIES[n % 4],
            None,
            "purchase",
            _at(BASE + timedelta(days=o)),
            Decimal(n),
        )
        for n, o in enumerate(_boundary_offsets())
    ],
)
STITCHED_ON_THE_AS_OF_DATE = (
    [BASE],
    [
        Event("e000", "ECID:E2", None, "page_view", _at(BASE - timedelta(days=5))),
        Event("e001", "CRMID:C0", "ECID:E2", "purchase", _at(BASE), Decimal("20")),
        Event("e002", "CRMID:C1", "ECID:E3", "checkout", _at(BASE - timedelta(days=2)), None),
        Event("e003", "ECID:E3", None, "page_view", _at(BASE - timedelta(days=9))),
    ],
)


# ----------------------------------------------------------------------------------------------
# the reference: straight from the events, one feature at a time
# ----------------------------------------------------------------------------------------------
def reference_sessions(events: list[Event]) -> dict[tuple[str, date], list[list[Event]]]:
    """Sessions per (identity, day): sorted by time then id, a new one after a gap >= timeout."""
    by_day: dict[tuple[str, date], list[Event]] = defaultdict(list)
    for event in events:
        if event.group not in EMAIL:
            by_day[(event.identity, event.day)].append(event)
    sessions = {}
    for key, day_events in by_day.items():
        day_events.sort(key=lambda e: (e.at, e.event_id))
        runs = [[day_events[0]]]
        for previous, event in itertools.pairwise(day_events):
            if (event.at - previous.at).total_seconds() >= TIMEOUT:
                runs.append([])
            runs[-1].append(event)
        sessions[key] = runs
    return sessions


def session_stats(runs: list[list[Event]]) -> tuple[int, int, int, int]:
    """(sessions, events in sessions, seconds from first to last event summed, one-event sessions)."""
    seconds = sum(int((run[-1].at - run[0].at).total_seconds()) for run in runs)
    return len(runs), sum(len(r) for r in runs), seconds, sum(len(r) == 1 for r in runs)


def reference_rollup(events: list[Event]) -> dict[tuple[str, date], dict]:
    sessions = reference_sessions(events)
    rows: dict[tuple[str, date], dict] = {}
    for key in sorted({(e.identity, e.day) for e in events}):
        day_events = [e for e in events if (e.identity, e.day) == key]
        count, in_sessions, seconds, bounced = session_stats(sessions.get(key, []))
        rows[key] = {
            "events": len(day_events),
            **{m: sum(e.group == g for e in day_events) for m, g in COUNTED.items()},
            "orders": sum(e.group == "purchase" for e in day_events),
            "revenue": float(sum(e.revenue for e in day_events if e.revenue is not None)),
            "web_events": sum(e.group in WEB for e in day_events),
            "sessions": count,
            "session_events": in_sessions,
            "session_seconds": float(seconds),
            "bounced_sessions": bounced,
        }
    return rows


def reference_links(events: list[Event]) -> dict[str, tuple[date, str]]:
    """alias -> (first day seen with a CRMID, that CRMID); ties go to the smallest CRMID."""
    seen: dict[str, list[tuple[date, str]]] = defaultdict(list)
    for event in events:
        if event.alias:
            seen[event.alias].append((event.day, event.identity))
    return {alias: min(pairs) for alias, pairs in seen.items()}


def reference_features(as_ofs: list[date], events: list[Event]) -> dict[tuple[str, date], dict]:
    links = reference_links(events)
    sessions = reference_sessions(events)
    segments = _segment_map()
    rows: dict[tuple[str, date], dict] = {}
    for as_of in as_ofs:

        def customer(identity: str, as_of: date = as_of) -> str:
            linked = links.get(identity)
            return linked[1] if linked and linked[0] < as_of else identity

        visible = [e for e in events if e.day < as_of]  # days strictly before the as-of date
        for cust in sorted({customer(e.identity) for e in visible}):
            mine = [e for e in visible if customer(e.identity) == cust]
            stats = [
                session_stats(sessions.get(k, [])) for k in {(e.identity, e.day) for e in mine}
            ]
            rows[(cust, as_of)] = _features_of(as_of, mine, sessions, customer, stats)
        _rfm_scores([r for (c, d), r in rows.items() if d == as_of], segments)
    return rows


def _features_of(as_of, mine, sessions, customer, stats) -> dict:
    def since(days: int, until: int = 0) -> list[Event]:
        return [e for e in mine if as_of - timedelta(days) <= e.day < as_of - timedelta(until)]

    def sessions_in(days: int, until: int = 0) -> int:
        keys = {(e.identity, e.day) for e in since(days, until)}
        return sum(len(sessions.get(k, [])) for k in keys)

    def revenue(some: list[Event]) -> Decimal:
        return sum((e.revenue for e in some if e.revenue is not None), Decimal(0))

    purchases = [e for e in mine if e.group == "purchase"]
    purchase_days = sorted({e.day for e in purchases})
    days = sorted({e.day for e in mine})
    visits = [e.day for e in mine if e.group in WEB]
    n_sessions, session_events, session_seconds, bounced = (
        sum(s) for s in zip(*stats, strict=True)
    )
    revenue_total = float(revenue(mine))
    row = {
        "first_activity_date": days[0],
        "last_activity_date": days[-1],
        "last_visit_date": max(visits, default=None),
        "first_purchase_date": purchase_days[0] if purchase_days else None,
        "last_purchase_date": purchase_days[-1] if purchase_days else None,
        "orders_total": len(purchases),
        "purchase_days_total": len(purchase_days),
        "revenue_total": revenue_total,
        "active_days_total": len(days),
        "sessions_total": n_sessions,
        "session_events_total": session_events,
        "session_seconds_total": float(session_seconds),
        "bounced_sessions_total": bounced,
        "orders_in_recent_window": sum(e.group == "purchase" for e in since(RECENT)),
    }
    for w in WINDOWS:
        in_window = since(w)
        row[f"orders_{w}d"] = sum(e.group == "purchase" for e in in_window)
        row[f"revenue_{w}d"] = float(revenue(in_window))
        for measure, group in COUNTED.items():
            row[f"{measure}_{w}d"] = sum(e.group == group for e in in_window)
        row[f"sessions_{w}d"] = sessions_in(w)
        row[f"active_days_{w}d"] = len({e.day for e in in_window})
    recent, before = since(TREND), since(2 * TREND, TREND)
    row[f"orders_trend_{TREND}d"] = sum(e.group == "purchase" for e in recent) - sum(
        e.group == "purchase" for e in before
    )
    row[f"revenue_trend_{TREND}d"] = float(revenue(recent) - revenue(before))
    row[f"page_views_trend_{TREND}d"] = sum(e.group == "page_view" for e in recent) - sum(
        e.group == "page_view" for e in before
    )
    row[f"sessions_trend_{TREND}d"] = sessions_in(TREND) - sessions_in(2 * TREND, TREND)

    def days_to(day: date | None, end: date | None = as_of) -> int | None:
        return None if day is None or end is None else (end - day).days

    first_day_revenue = float(
        revenue([e for e in purchases if e.day == row["first_purchase_date"]])
    )
    n_orders, n_days = row["orders_total"], row["purchase_days_total"]
    row |= {
        "recency_days": days_to(row["last_purchase_date"]),
        "tenure_days": days_to(row["first_activity_date"]),
        "customer_tenure_days": days_to(row["first_purchase_date"]),
        "days_since_last_visit": days_to(row["last_visit_date"]),
        "average_order_value": revenue_total / n_orders if n_orders else None,
        "average_session_depth": session_events / n_sessions if n_sessions else None,
        "average_session_seconds": session_seconds / n_sessions if n_sessions else None,
        "bounce_rate": bounced / n_sessions if n_sessions else None,
        "repeat_purchase_days": n_days - 1 if n_days else None,
        "repeat_recency_days": days_to(row["first_purchase_date"], row["last_purchase_date"]),
        "repeat_average_value": (
            (revenue_total - first_day_revenue) / (n_days - 1)
            if n_days > 1
            else (0.0 if n_days == 1 else None)
        ),
        "has_purchased": n_orders > 0,
        "is_conversion_eligible": row["orders_in_recent_window"] == 0,
    }
    return row


def _rfm_scores(rows: list[dict], segments: dict[tuple[int, int], str]) -> None:
    """Quintile scores among the customers who purchased: ceil(5 x share at or below)."""
    buyers = [r for r in rows if r["has_purchased"]]

    def score(value, values: list, at_or_below) -> int:
        return math.ceil(5 * (sum(at_or_below(v, value) for v in values) / len(values)))

    for row in rows:
        if not row["has_purchased"]:
            row |= dict.fromkeys(["recency_score", "frequency_score", "monetary_score"])
            row |= {"frequency_monetary_score": None, "rfm_segment": "Prospects"}
            continue
        recency = [b["recency_days"] for b in buyers]
        frequency = [b["purchase_days_total"] for b in buyers]
        monetary = [b["revenue_total"] for b in buyers]
        r = score(row["recency_days"], recency, lambda v, x: v >= x)  # fewer days is better
        f = score(row["purchase_days_total"], frequency, lambda v, x: v <= x)
        m = score(row["revenue_total"], monetary, lambda v, x: v <= x)
        fm = (f + m + 1) // 2
        row |= {"recency_score": r, "frequency_score": f, "monetary_score": m}
        row |= {"frequency_monetary_score": fm, "rfm_segment": segments.get((r, fm), "Prospects")}


def _segment_map() -> dict[tuple[int, int], str]:
    with (PROJECT_DIR / "seeds" / "rfm_segment_map.csv").open(encoding="utf-8") as fh:
        return {
            (int(row["recency_score"]), int(row["frequency_monetary_score"])): row["rfm_segment"]
            for row in csv.DictReader(fh)
        }


# ----------------------------------------------------------------------------------------------
# the SQL: compiled once, run per example in memory
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("compiled_features")
    result = run_dbt(
        "compile",
        "--target",
        "ci",
        "--select",
        *MODELS,
        "--exclude",
        "resource_type:test",
        "resource_type:unit_test",
        "--target-path",
        str(work / "target"),
        "--log-path",
        str(work / "logs"),
        # each model's whole query (on DuckDB int_identity_links is otherwise joined file by
        # file in a post-hook, and its compiled query selects no pair)
        dbt_vars={"raw_format": "jsonl", "raw_profiles": False, "events_by_file": False},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    root = work / "target" / "compiled" / "profile_enrichment"
    return {name: (root / path).read_text(encoding="utf-8") for name, path in MODELS.items()}


def run_sql(
    compiled: dict[str, str], as_ofs: list[date], events: list[Event]
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB holding the upstream relations and every compiled model."""
    con = duckdb.connect(":memory:")  # naive UTC timestamps throughout
    con.execute("create schema main_reference")
    for seed in SEEDS:
        csv_path = PROJECT_DIR / "seeds" / f"{seed}.csv"
        con.execute(f"create table main_reference.{seed} as from read_csv('{csv_path}')")
    con.execute(
        """
        create table int_events_accepted (
            event_id varchar, record_id varchar, identity_key varchar, identity_namespace varchar,
            event_type varchar, event_group varchar, event_at timestamp, event_date date,
            order_id varchar, revenue double, currency_code varchar, page_name varchar,
            source_file varchar
        )
        """
    )
    con.execute(
        "create table stg_aep__event_identities (record_id varchar, namespace varchar, "
        "identity_value varchar, is_primary boolean)"
    )
    for e in events:
        is_purchase = e.group == "purchase"
        con.execute(
            "insert into int_events_accepted values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, null, 'p')",
            [
                e.event_id,
                "r-" + e.event_id,
                e.identity,
                e.identity.split(":")[0],
                GROUPS[e.group],
                e.group,
                e.at,
                e.day,
                e.event_id if is_purchase else None,
                float(e.revenue) if is_purchase else None,
                "USD" if is_purchase else None,
            ],
        )
        for number, key in enumerate([e.identity, e.alias]):
            if key:
                namespace, value = key.split(":")
                con.execute(
                    "insert into stg_aep__event_identities values (?, ?, ?, ?)",
                    ["r-" + e.event_id, namespace, value, number == 0],
                )
    con.execute("create table int_run_as_of_date (as_of_date date)")
    con.executemany("insert into int_run_as_of_date values (?)", [[d] for d in as_ofs])
    for name, sql in compiled.items():
        con.execute(f"create table {name} as {sql}")
    return con


def rows_of(con: duckdb.DuckDBPyConnection, table: str, keys: list[str]) -> dict[tuple, dict]:
    relation = con.table(table)
    names = relation.columns
    return {
        tuple(row[names.index(k)] for k in keys): {
            n: v for n, v in zip(names, row, strict=True) if n not in keys
        }
        for row in relation.fetchall()
    }


def assert_rows_equal(actual: dict[tuple, dict], expected: dict[tuple, dict], context) -> None:
    assert sorted(actual) == sorted(expected), context
    for key, want in expected.items():
        got = {column: actual[key][column] for column in want}
        mismatched = {
            column: (got[column], value)
            for column, value in want.items()
            if not (
                got[column] == value
                or (isinstance(value, float) and math.isclose(got[column], value, rel_tol=1e-12))
            )
        }
        assert mismatched == {}, (key, "column: (sql, reference)", mismatched, context)


def test_the_reference_covers_every_feature_column(compiled: dict[str, str]) -> None:
    """A feature the SQL adds must be added to the reference too, or it would go unchecked."""
    con = run_sql(compiled, *SAME_TIMESTAMP)
    sql_columns = set(con.table("customer_features").columns) - {"customer_id", "as_of_date"}
    (reference_row,) = reference_features(*SAME_TIMESTAMP).values()
    assert sql_columns == set(reference_row)
    rollup_columns = set(con.table("int_identity_daily_activity").columns)
    (rollup_row,) = reference_rollup(SAME_TIMESTAMP[1]).values()
    assert rollup_columns - {"identity_key", "activity_date"} == set(rollup_row)


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays reproducible
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=event_sets())
@example(case=SINGLE_EVENT_CUSTOMER)
@example(case=SAME_TIMESTAMP)
@example(case=AT_EVERY_BOUNDARY)
@example(case=STITCHED_ON_THE_AS_OF_DATE)
def test_rollup_and_features_match_the_reference(compiled: dict[str, str], case) -> None:
    as_ofs, events = case
    con = run_sql(compiled, as_ofs, events)
    try:
        rollup = rows_of(con, "int_identity_daily_activity", ["identity_key", "activity_date"])
        assert_rows_equal(rollup, reference_rollup(events), ("rollup", as_ofs, events))
        features = rows_of(con, "customer_features", ["customer_id", "as_of_date"])
        expected = reference_features(as_ofs, events)
        assert_rows_equal(features, expected, ("customer_features", as_ofs, events))
    finally:
        con.close()
