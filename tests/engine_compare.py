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


@dataclass
class Table:
    """One relation read from an engine: column names and rows (tuples)."""

    columns: list[str]
    rows: list[tuple]


def read_duckdb(con, relation: str) -> Table:
    cursor = con.execute(f"select * from {relation}")
    return Table([d[0] for d in cursor.description], cursor.fetchall())


def read_dbapi(con, relation: str) -> Table:
    with con.cursor() as cursor:
        cursor.execute(f"select * from {relation}")
        return Table([d[0] for d in cursor.description], cursor.fetchall())


def _normalize(value: Any) -> Any:
    """One canonical Python value per logical value, whatever the driver returned."""
    if value is None:
        return None
    if isinstance(value, bool | int | str):
        if isinstance(value, str) and value[:1] in "{[" and value[-1:] in "}]":
            try:
                return ("json", json.loads(value))
            except ValueError:
                return value
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dict):
        return ("json", value)
    if isinstance(value, list | tuple):
        return tuple(_normalize(v) for v in value)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else value
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
            key.append((1, json.dumps(value, sort_keys=True, default=str)))
    return tuple(key)


def _equal(left: Any, right: Any, rel: float) -> bool:
    if isinstance(left, float) or isinstance(right, float):
        if left is None or right is None:
            return left is right
        return math.isclose(float(left), float(right), rel_tol=rel, abs_tol=rel)
    if isinstance(left, tuple) and isinstance(right, tuple) and left[:1] != ("json",):
        return len(left) == len(right) and all(
            _equal(a, b, rel) for a, b in zip(left, right, strict=True)
        )
    if isinstance(left, tuple) and isinstance(right, tuple):  # ("json", document)
        return _json_equal(left[1], right[1], rel)
    return left == right


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
