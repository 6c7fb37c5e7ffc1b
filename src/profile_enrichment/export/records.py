"""Build XDM Individual Profile records from ``profile_insights`` rows.

The ``modelInsights`` block is built by walking :data:`.layout.MODEL_INSIGHTS`, so it has
the same shape as the registered field group. Null, NaN and empty values are omitted
(AEP rejects them); an object whose required child is missing is omitted as a whole.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import duckdb

from profile_enrichment.errors import UserError

from .layout import MODEL_INSIGHTS, Field, tenant_key

# identityMap namespaces in primary-priority order: (namespace, column, authenticatedState)
IDENTITY_NAMESPACES: tuple[tuple[str, str, str], ...] = (
    ("CRMID", "crm_id", "authenticated"),
    ("Email_LC_SHA256", "email_sha256", "ambiguous"),
    ("ECID", "ecid", "ambiguous"),
)

PROFILE_INSIGHTS_TABLE = "profile_insights"


def _as_date(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return dt.date.fromisoformat(str(value)[:10]).isoformat()


def _format_number(value: float | int) -> str:
    """Deterministic text for a numeric value: 288.0 -> '288', 0.5 -> '0.5'."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _leaf(f: Field, raw: Any) -> Any:
    """Convert one raw value to the field's XDM type; None means 'omit'."""
    if raw is None:
        return None
    if f.xdm_type == "date":
        return _as_date(raw)
    if f.xdm_type == "string":
        if isinstance(raw, bool):
            raw = str(raw).lower()
        elif isinstance(raw, int | float):
            if isinstance(raw, float) and not math.isfinite(raw):
                return None
            raw = _format_number(raw) if f.to_string else str(raw)
        text = str(raw)
        return text if text.strip() else None
    if f.xdm_type in ("number", "integer"):
        if isinstance(raw, bool):
            return None
        try:
            num = float(raw)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(num):
            return None
        if f.xdm_type == "integer":
            return int(num) if num.is_integer() else None
        return int(raw) if isinstance(raw, int) else num
    raise AssertionError(f"unsupported leaf type {f.xdm_type}")


def _value(f: Field, row: Mapping[str, Any], ctx: Mapping[str, Any]) -> Any:
    """Value of field ``f`` for ``row`` (None when it must be omitted)."""
    if f.xdm_type == "object":
        obj = {}
        for c in f.children:
            v = _value(c, row, ctx)
            if v is not None:
                obj[c.name] = v
        if not obj or any(r not in obj for r in f.required):
            return None
        # an object made only of constants/context (no data) carries no information
        if all(_is_decoration(c) for c in f.children if c.name in obj):
            return None
        return obj
    if f.xdm_type == "map":
        m = {}
        for key, col in f.map_sources.items():
            v = row.get(col)
            if v is not None and str(v).strip():
                m[key] = str(v)
        return m or None
    if f.xdm_type == "array":
        raw = row.get(f.source) if f.source else None
        if raw is None or raw == "":
            return None
        items = json.loads(raw) if isinstance(raw, str | bytes) else raw
        out = []
        for element in items or ():
            if not isinstance(element, Mapping):
                continue
            item = {}
            for c in f.children:
                v = _leaf(c, element.get(c.source or c.name))
                if v is not None:
                    item[c.name] = v
            if item and all(r in item for r in f.required):
                out.append(item)
        return out or None
    if f.const is not None:
        return f.const
    v = _leaf(f, row.get(f.source)) if f.source else None
    if v is None and f.fallback_context:
        v = _leaf(f, ctx.get(f.fallback_context))
    return v


def _is_decoration(f: Field) -> bool:
    """Fields that never carry data on their own (constants, dates)."""
    return f.const is not None or f.xdm_type == "date"


def identity_map(row: Mapping[str, Any]) -> tuple[dict[str, list[dict[str, Any]]], str, str]:
    """identityMap with exactly one primary; returns (map, primary namespace, primary id)."""
    idmap: dict[str, list[dict[str, Any]]] = {}
    primary: tuple[str, str] | None = None
    for namespace, column, state in IDENTITY_NAMESPACES:
        value = row.get(column)
        if value is None or not str(value).strip():
            continue
        value = str(value).strip()
        if namespace == "Email_LC_SHA256":
            value = value.lower()
        is_primary = primary is None
        if is_primary:
            primary = (namespace, value)
        idmap[namespace] = [{"id": value, "authenticatedState": state, "primary": is_primary}]
    if primary is None:
        return idmap, "", ""
    return idmap, primary[0], primary[1]


def record_id(namespace: str, identity: str, as_of: str, model_versions: Mapping[str, str]) -> str:
    """Deterministic, colon-free ``_id``: sha256 hex of primary identity, as-of date, versions."""
    parts = [namespace, identity, as_of] + [f"{k}={v}" for k, v in sorted(model_versions.items())]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def build_record(row: Mapping[str, Any], tenant: str, as_of: str | dt.date) -> dict[str, Any]:
    """One XDM profile record for one ``profile_insights`` row."""
    as_of_s = _as_date(as_of) or ""
    key = tenant_key(tenant)
    idmap, ns, ident = identity_map(row)
    insights = _value(MODEL_INSIGHTS, row, {"as_of": as_of_s}) or {}
    record: dict[str, Any] = {}
    if ns:
        record["_id"] = record_id(ns, ident, as_of_s, insights.get("modelVersions", {}))
    if idmap:
        record["identityMap"] = idmap
    if insights:
        record[key] = {"modelInsights": insights}
    return record


def build_records(
    rows: Iterable[Mapping[str, Any]], tenant: str, as_of: str | dt.date
) -> Iterator[dict[str, Any]]:
    """Records for ``rows`` (dicts of profile_insights columns), in input order.

    Rows without any identity yield a record without ``identityMap``; the validator rejects it
    with a reason rather than dropping it silently.
    """
    tenant_key(tenant)  # fail fast on a bad tenant
    as_of_s = _as_date(as_of)
    if not as_of_s:
        raise UserError("as-of date is required", hint="pass it as YYYY-MM-DD")
    for row in rows:
        yield build_record(row, tenant, as_of_s)


def read_profile_insights(
    warehouse: str | Path, batch_size: int = 10_000, table: str = PROFILE_INSIGHTS_TABLE
) -> Iterator[dict[str, Any]]:
    """Stream ``profile_insights`` rows as dicts, sorted by customer_id, in Arrow batches.

    Opens the DuckDB file read-only, so it never takes the write lock from a dbt build.
    """
    path = Path(warehouse)
    if not path.is_file():
        raise UserError(f"warehouse not found: {path}", hint="run `profile-enrichment run` first")
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    con = duckdb.connect(str(path), read_only=True)
    try:
        try:
            rel = con.sql(f'select * from "{table}" order by customer_id')
        except duckdb.CatalogException as err:
            raise UserError(
                f"table {table} not found in {path}", hint="build the insights marts first"
            ) from err
        reader = rel.to_arrow_reader(batch_size)
        for batch in reader:
            yield from batch.to_pylist()
    finally:
        con.close()
