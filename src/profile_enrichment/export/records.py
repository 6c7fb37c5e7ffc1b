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
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

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


def _loads(raw: str | bytes) -> Any:
    """Parse a JSON column: orjson, falling back to the standard library for what orjson
    refuses (NaN literals, integers beyond 64 bits), so both accept the same input."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


#: Integers a float holds exactly: within this range ``int(float(n)) == n``.
_EXACT_INT = 2**53


Builder = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]


class _Emitter:
    """Writes the Python source of one function that builds a field's value from a row.

    The layout is walked once, here, instead of once per record: a million records would
    otherwise spend most of the export re-reading the same Field attributes and calling one
    function per field. Each leaf is inlined with a fast path for the value types DuckDB hands
    over (str, float, int, date); any other value goes through :func:`_leaf`, which stays the
    one definition of the conversions.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {
            "_isfinite": math.isfinite,
            "_loads": _loads,
            "_Mapping": Mapping,
            "_date": dt.date,
            "_format_number": _format_number,
        }
        self._count = 0

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def constant(self, value: Any) -> str:
        name = self.fresh("k")
        self.names[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def leaf(self, f: Field, raw: str, out: str, depth: int) -> None:
        """``out = <f's value of the expression raw>``; ``raw`` is a plain name."""
        convert = self.constant(partial(_leaf, f))
        e = self.emit
        e(depth, f"{out} = {raw}")
        if f.xdm_type == "string":
            e(depth, f"if type({out}) is str:")
            e(depth + 1, f"if not {out}.strip(): {out} = None")
            if f.to_string:
                e(depth, f"elif type({out}) is float and _isfinite({out}):")
                e(depth + 1, f"{out} = _format_number({out})")
        elif f.xdm_type == "number":
            e(depth, f"if type({out}) is float:")
            e(depth + 1, f"if not _isfinite({out}): {out} = None")
        elif f.xdm_type == "integer":
            e(depth, f"if type({out}) is int and -{_EXACT_INT} <= {out} <= {_EXACT_INT}:")
            e(depth + 1, "pass")
        elif f.xdm_type == "date":
            e(depth, f"if type({out}) is _date:")
            e(depth + 1, f"{out} = {out}.isoformat()")
        else:
            raise AssertionError(f"unsupported leaf type {f.xdm_type}")
        e(depth, f"elif {out} is not None:")
        e(depth + 1, f"{out} = {convert}({out})")

    def field(self, f: Field, out: str, depth: int) -> None:
        """Statements that leave the value of ``f`` (None: omit) in the local ``out``."""
        e = self.emit
        if f.xdm_type == "object":
            obj, data = self.fresh("o"), self.fresh("d")
            e(depth, f"{obj} = {{}}")
            e(depth, f"{data} = False")
            for child in f.children:
                value = self.fresh("v")
                self.field(child, value, depth)
                e(depth, f"if {value} is not None:")
                e(depth + 1, f"{obj}[{child.name!r}] = {value}")
                if not _is_decoration(child):
                    e(depth + 1, f"{data} = True")
            # an object made only of constants/context (no data) carries no information,
            # and one without its required children is omitted whole
            missing = "".join(f" or {r!r} not in {obj}" for r in f.required)
            e(depth, f"{out} = None if not {data}{missing} else {obj}")
        elif f.xdm_type == "map":
            m = self.fresh("m")
            e(depth, f"{m} = {{}}")
            for key, col in f.map_sources.items():
                raw = self.fresh("r")
                e(depth, f"{raw} = row.get({col!r})")
                e(depth, f"if {raw} is not None and str({raw}).strip():")
                e(depth + 1, f"{m}[{key!r}] = str({raw})")
            e(depth, f"{out} = {m} or None")
        elif f.xdm_type == "array":
            raw, items, element, item = (self.fresh(p) for p in ("r", "a", "e", "i"))
            e(depth, f"{raw} = row.get({f.source!r})" if f.source else f"{raw} = None")
            e(depth, f"{items} = []")
            e(depth, f"if {raw} is not None and {raw} != '':")
            e(depth + 1, f"if isinstance({raw}, str | bytes): {raw} = _loads({raw})")
            e(depth + 1, f"for {element} in {raw} or ():")
            e(depth + 2, f"if type({element}) is not dict and not isinstance({element}, _Mapping):")
            e(depth + 3, "continue")
            e(depth + 2, f"{item} = {{}}")
            for child in f.children:
                got, value = self.fresh("g"), self.fresh("v")
                e(depth + 2, f"{got} = {element}.get({(child.source or child.name)!r})")
                self.leaf(child, got, value, depth + 2)
                e(depth + 2, f"if {value} is not None: {item}[{child.name!r}] = {value}")
            required = "".join(f" and {r!r} in {item}" for r in f.required)
            e(depth + 2, f"if {item}{required}: {items}.append({item})")
            e(depth, f"{out} = {items} or None")
        elif f.const is not None:
            e(depth, f"{out} = {self.constant(f.const)}")
        elif not f.source:
            e(depth, f"{out} = None")
        else:
            raw = self.fresh("r")
            e(depth, f"{raw} = row.get({f.source!r})")
            self.leaf(f, raw, out, depth)
            if f.fallback_context:
                e(depth, f"if {out} is None:")
                ctx = self.fresh("c")
                e(depth + 1, f"{ctx} = ctx.get({f.fallback_context!r})")
                self.leaf(f, ctx, out, depth + 1)


def _compile(f: Field) -> Builder:
    """A function (row, context) -> the value of field ``f``, None when it must be omitted."""
    emitter = _Emitter()
    emitter.emit(0, "def build(row, ctx):")
    emitter.field(f, "value", 1)
    emitter.emit(1, "return value")
    source = "\n".join(emitter.lines) + "\n"
    namespace = dict(emitter.names)
    exec(compile(source, f"<layout builder: {f.name}>", "exec"), namespace)
    build = namespace["build"]
    build.__source__ = source  # for reading, and for the tests
    return build


@lru_cache(maxsize=1)
def _model_insights() -> Builder:
    """The compiled builder of the ``modelInsights`` block."""
    return _compile(MODEL_INSIGHTS)


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
    insights = _model_insights()(row, {"as_of": as_of_s}) or {}
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


def read_profile_batches(
    warehouse: str | Path, batch_size: int = 10_000, table: str = PROFILE_INSIGHTS_TABLE
) -> Iterator[pa.RecordBatch]:
    """Stream ``profile_insights`` as Arrow record batches, sorted by customer_id.

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
        yield from rel.to_arrow_reader(batch_size)
    finally:
        con.close()


def read_profile_insights(
    warehouse: str | Path, batch_size: int = 10_000, table: str = PROFILE_INSIGHTS_TABLE
) -> Iterator[dict[str, Any]]:
    """Stream ``profile_insights`` rows as dicts, sorted by customer_id (see
    :func:`read_profile_batches`)."""
    for batch in read_profile_batches(warehouse, batch_size, table):
        yield from batch.to_pylist()
