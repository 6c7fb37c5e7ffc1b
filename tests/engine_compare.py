"""Row-by-row comparison of the same dbt relations built on two engines.

Exact for integers, strings, dates, timestamps and booleans; floats within a relative
tolerance (1e-9 by default: engines sum doubles in different orders). JSON columns are
compared as parsed JSON (jsonb renders the same document with other spacing and key order),
and lists element by element.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Tables that record how a run went rather than what the data says.
BOOKKEEPING = {"int_identity_daily_activity_watermark"}
# What the issue names: features, snapshots, labels, plus ingestion, quarantine and ADF output.
MUST_COMPARE = {
    "stg_aep__experience_events",
    "stg_aep__event_identities",
    "stg_aep__product_list_items",
    "int_events_validated",
    "rejected_events",
    "int_identity_links",
    "int_events_accepted",
    "int_identity_daily_activity",
    "int_purchase_journeys",
    "customer_features",
    "customer_feature_snapshots",
    "customer_category_affinity",
    "customer_top_categories",
    "customer_labels",
    "int_training_examples",
    "feature_catalog",
    "propensity_scores_in_sql",
    "clv_scores_in_sql",
}
# Records every engine must quarantine the same way (JSON Lines only: Parquet rows are always
# valid JSON). Reason codes: seeds/quarantine_reasons.csv. tests/conftest.py (engine_raw)
# writes them beside the generated events.
BAD_LINES = [
    '{"_id": "bad-1", "eventType": "web.webpagedetails.pageViews"',  # invalid_json
    json.dumps({"eventType": "web.webpagedetails.pageViews", "timestamp": "2024-05-01T10:00:00Z",
                "identityMap": {"ECID": [{"id": "e-1"}]}}),  # missing_event_id
    json.dumps({"_id": "bad-3", "eventType": "web.webpagedetails.pageViews",
                "timestamp": "2024-02-30T10:00:00Z",
                "identityMap": {"ECID": [{"id": "e-3"}]}}),  # unparseable_timestamp
    json.dumps({"_id": "bad-4", "eventType": "no.such.type", "timestamp": "2024-05-01T10:00:00Z",
                "identityMap": {"ECID": [{"id": "e-4"}]}}),  # unknown_event_type
    json.dumps({"_id": "bad-5", "eventType": "commerce.purchases",
                "timestamp": "2024-05-01T10:00:00+02:00",
                "identityMap": {"ECID": [{"id": "e-5", "primary": True}]},
                "commerce": {"order": {"purchaseID": "o-5", "priceTotal": -3.5,
                                       "currencyCode": "USD"}}}),  # negative_amount
    json.dumps({"_id": "bad-6", "eventType": "web.webpagedetails.pageViews",
                "timestamp": "2024-05-01T10:00:00Z",
                "identityMap": {"Email_LC_SHA256": [{"id": "someone@example.com"}]}}),  # privacy
]  # fmt: skip
QUARANTINE_REASONS = {
    "invalid_json": 1,
    "missing_event_id": 1,
    "unparseable_timestamp": 1,
    "unknown_event_type": 1,
    "negative_amount": 1,
    "no_usable_identity": 1,
}


@dataclass
class Table:
    """One relation read from an engine: column names and rows (tuples)."""

    columns: list[str]
    rows: list[tuple]


def read_duckdb(con, relation: str) -> Table:
    cursor = con.execute(f"select * from {relation}")
    return Table([d[0] for d in cursor.description], cursor.fetchall())


def read_parquet(path) -> Table:
    """A table written by tests/spark_tables.py (one Parquet file per Spark table)."""
    import pyarrow.parquet as pq

    arrow = pq.read_table(path)
    return Table(arrow.column_names, [tuple(row.values()) for row in arrow.to_pylist()])


def read_dbapi(con, relation: str) -> Table:
    with con.cursor() as cursor:
        cursor.execute(f"select * from {relation}")
        return Table([d[0] for d in cursor.description], cursor.fetchall())


@dataclass(frozen=True)
class JsonDoc:
    """A parsed JSON document (from text, a jsonb dict, or a list of them), marked so that
    it is never mistaken for a SQL list, whatever it holds."""

    doc: Any


def _json_default(value: Any) -> Any:
    """json.dumps fallback for sort keys: a document as itself, anything else as text."""
    return value.doc if isinstance(value, JsonDoc) else str(value)


def _normalize(value: Any) -> Any:
    """One canonical Python value per logical value, whatever the driver returned."""
    if value is None:
        return None
    if isinstance(value, bool | int | str):
        if isinstance(value, str) and value[:1] in "{[" and value[-1:] in "}]":
            try:
                return JsonDoc(json.loads(value))
            except ValueError:
                return value
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dict):
        return JsonDoc(value)
    if isinstance(value, list | tuple):
        return tuple(_normalize(v) for v in value)
    if isinstance(value, dt.datetime):
        # The project's timestamps are UTC. DuckDB's and PostgreSQL's `timestamp` are naive;
        # Spark's TIMESTAMP is an instant (shown in the session's zone, UTC): same instant,
        # same value.
        if value.tzinfo is None:
            return value
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(value, dt.date):
        return value
    if hasattr(value, "tolist"):  # numpy arrays / scalars
        return _normalize(value.tolist())
    return value


def _sort_key(row: tuple) -> tuple:
    """Floats rounded (for ordering only), everything else as text, nulls first."""
    key = []
    for value in row:
        if isinstance(value, float):
            key.append((1, f"{value:.9g}"))
        elif value is None:
            key.append((0, ""))
        else:
            key.append((1, json.dumps(value, sort_keys=True, default=_json_default)))
    return tuple(key)


def _equal(left: Any, right: Any, rel: float) -> bool:
    if isinstance(left, float) or isinstance(right, float):
        if left is None or right is None:
            return left is right
        return math.isclose(float(left), float(right), rel_tol=rel, abs_tol=rel)
    if isinstance(left, JsonDoc) or isinstance(right, JsonDoc):
        # a JSON array arrives as text from DuckDB, as a list of documents from psycopg
        if not isinstance(left, JsonDoc | tuple) or not isinstance(right, JsonDoc | tuple):
            return False
        return _json_equal(_plain(left), _plain(right), rel)
    if isinstance(left, tuple) and isinstance(right, tuple):
        return len(left) == len(right) and all(
            _equal(a, b, rel) for a, b in zip(left, right, strict=True)
        )
    return left == right


def _plain(value: Any) -> Any:
    """A normalized value back as plain JSON: JsonDoc(doc) -> doc, tuples -> lists."""
    if isinstance(value, JsonDoc):
        return value.doc
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _json_equal(left: Any, right: Any, rel: float) -> bool:
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(
            _json_equal(left[k], right[k], rel) for k in left
        )
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(
            _json_equal(a, b, rel) for a, b in zip(left, right, strict=True)
        )
    if isinstance(left, float | int) and isinstance(right, float | int):
        if isinstance(left, bool) or isinstance(right, bool):
            return left == right
        return math.isclose(left, right, rel_tol=rel, abs_tol=rel)
    return left == right


def compare(name: str, left: Table, right: Table, rel: float = 1e-9) -> list[str]:
    """Problems found (empty when the relations are equal); at most a few per relation."""
    problems: list[str] = []
    left_cols = [c.lower() for c in left.columns]
    right_cols = [c.lower() for c in right.columns]
    if sorted(left_cols) != sorted(right_cols):
        return [f"{name}: columns differ: {sorted(set(left_cols) ^ set(right_cols))}"]
    order = [right_cols.index(c) for c in left_cols]
    left_rows = sorted((tuple(_normalize(v) for v in row) for row in left.rows), key=_sort_key)
    right_rows = sorted(
        (tuple(_normalize(row[i]) for i in order) for row in right.rows), key=_sort_key
    )
    if len(left_rows) != len(right_rows):
        return [f"{name}: {len(left_rows)} rows vs {len(right_rows)}"]
    for number, (a, b) in enumerate(zip(left_rows, right_rows, strict=True)):
        diffs = [
            f"{col}={va!r} vs {vb!r}"
            for col, va, vb in zip(left_cols, a, b, strict=True)
            if not _equal(va, vb, rel)
        ]
        if diffs:
            problems.append(f"{name} row {number}: " + "; ".join(diffs[:4]))
            if len(problems) >= 3:
                break
    return problems


def compare_all(
    names: Sequence[str], read_left, read_right, rel: float = 1e-9
) -> tuple[dict[str, int], list[str]]:
    """Compare every relation; returns ({name: rows}, problems)."""
    counts: dict[str, int] = {}
    problems: list[str] = []
    for name in names:
        left, right = read_left(name), read_right(name)
        counts[name] = len(left.rows)
        problems += compare(name, left, right, rel)
    return counts, problems


def _rows_by(table: Table, key: Sequence[str], values: Sequence[str]) -> dict[tuple, tuple]:
    index = {c.lower(): i for i, c in enumerate(table.columns)}
    return {
        tuple(row[index[c]] for c in key): tuple(row[index[c]] for c in values)
        for row in table.rows
    }


def _score_problems(in_sql: dict, in_python: dict, floats: int, rel: float) -> list[str]:
    """The first ``floats`` values within ``rel`` (relative, or absolute near 0), the rest
    exact; the same keys on both sides."""
    if in_sql.keys() != in_python.keys():
        missing = sorted(in_python.keys() ^ in_sql.keys(), key=str)[:5]
        return [f"customers differ ({len(in_sql)} in SQL, {len(in_python)} in Python): {missing}"]
    problems = []
    for key, expected in in_python.items():
        got = in_sql[key]
        close = all(
            math.isclose(g, e, rel_tol=rel, abs_tol=rel)
            for g, e in zip(got[:floats], expected[:floats], strict=True)
        )
        if not close or got[floats:] != expected[floats:]:
            problems.append(f"{key}: SQL {got} vs Python {expected}")
            if len(problems) >= 5:
                break
    return problems


def propensity_sql_vs_python(read_sql, read_python, rel: float = 1e-9) -> tuple[int, list[str]]:
    """propensity_scores_in_sql (the champions compiled to SQL, run by the engine) against the
    Python models' churn_/conversion_propensity_scores: every customer of both populations,
    probability within ``rel``, score, percentile, bucket and model version exact.
    ``read_*(relation name) -> Table``. Returns (customers compared, problems)."""
    in_sql = _rows_by(
        read_sql("propensity_scores_in_sql"),
        ["model_name", "customer_id"],
        ["probability", "score", "percentile", "bucket", "model_version"],
    )
    in_python: dict[tuple, tuple] = {}
    for name in ("churn", "conversion"):
        rows = _rows_by(
            read_python(f"{name}_propensity_scores"),
            ["customer_id"],
            [f"{name}_{c}" for c in ("probability", "score", "percentile", "bucket")]
            + [f"{name}_model_version"],
        )
        in_python.update({(name, *key): value for key, value in rows.items()})
    return len(in_python), _score_problems(in_sql, in_python, 1, rel)


def clv_sql_vs_python(read_sql, read_python, rel: float = 1e-9) -> tuple[int, list[str], float]:
    """clv_scores_in_sql (P(alive) and the Gamma-Gamma expected order value in SQL) against
    customer_lifetime_values. Returns (customers compared, problems, smallest P(alive))."""
    values = ["clv_probability_alive", "clv_expected_order_value"]
    in_sql = _rows_by(read_sql("clv_scores_in_sql"), ["customer_id"], [*values, "model_version"])
    in_python = _rows_by(
        read_python("customer_lifetime_values"), ["customer_id"], [*values, "clv_model_version"]
    )
    smallest_alive = min((v[0] for v in in_python.values()), default=1.0)
    return len(in_python), _score_problems(in_sql, in_python, 2, rel), smallest_alive
