"""The one definition of the XDM ExperienceEvent files this project writes, plus writers.

Both the synthetic generator (:mod:`profile_enrichment.generate`) and the order-file importer
(:mod:`profile_enrichment.importer`) build Arrow tables with :data:`EVENT_SCHEMA` and write them
with :func:`write_table` / :class:`EventFileWriter`, so the dbt staging layer sees exactly one
shape whichever way the data came in.

Field names are AEP *compatibility mode* (``_id``, ``identityMap``, ``commerce``, ...).
In Parquet a field that does not apply is null; in JSON Lines the key is absent (AEP rejects
nulls and empty values). Both writers are deterministic: the same table gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "CATEGORY_TYPE",
    "EVENT_SCHEMA",
    "EVENT_TYPES",
    "IDENTITY_ITEM_TYPE",
    "IDENTITY_MAP_TYPE",
    "MAX_EVENT_BYTES",
    "MEASURE_TYPE",
    "PRODUCT_LIST_ITEM_TYPE",
    "PROFILE_SCHEMA",
    "EventFileWriter",
    "check_event_rules",
    "drop_nulls",
    "encode_jsonl",
    "event_id",
    "format_timestamps_ms",
    "parquet_rows_as_records",
    "sha256_email",
    "table_to_json_lines",
    "write_table",
]

#: Event types the project emits (XDM soft enum values).
EVENT_TYPES: tuple[str, ...] = (
    "web.webpagedetails.pageViews",
    "commerce.productViews",
    "commerce.productListAdds",
    "commerce.checkouts",
    "commerce.purchases",
    "directMarketing.emailOpened",
    "directMarketing.emailClicked",
)

#: AEP Profile guardrail: one ExperienceEvent is at most 10 KB.
MAX_EVENT_BYTES = 10 * 1024

IDENTITY_ITEM_TYPE = pa.struct(
    [
        pa.field("id", pa.string()),
        pa.field("authenticatedState", pa.string()),
        pa.field("primary", pa.bool_()),
    ]
)
#: namespace code -> list of identity items (XDM identityMap).
IDENTITY_MAP_TYPE = pa.map_(pa.string(), pa.list_(IDENTITY_ITEM_TYPE))

#: XDM measure (``{"value": 1}``); value is a double as in XDM.
MEASURE_TYPE = pa.struct([pa.field("value", pa.float64())])

ORDER_TYPE = pa.struct(
    [
        pa.field("purchaseID", pa.string()),
        pa.field("priceTotal", pa.float64()),
        pa.field("currencyCode", pa.string()),
    ]
)

COMMERCE_TYPE = pa.struct(
    [
        pa.field("order", ORDER_TYPE),
        pa.field("purchases", MEASURE_TYPE),
        pa.field("productViews", MEASURE_TYPE),
        pa.field("productListAdds", MEASURE_TYPE),
        pa.field("checkouts", MEASURE_TYPE),
    ]
)

CATEGORY_TYPE = pa.struct(
    [pa.field("categoryID", pa.string()), pa.field("categoryName", pa.string())]
)

PRODUCT_LIST_ITEM_TYPE = pa.struct(
    [
        pa.field("SKU", pa.string()),
        pa.field("name", pa.string()),
        pa.field("quantity", pa.int64()),
        pa.field("priceTotal", pa.float64()),
        pa.field("currencyCode", pa.string()),
        pa.field("productCategories", pa.list_(CATEGORY_TYPE)),
    ]
)

WEB_TYPE = pa.struct(
    [
        pa.field(
            "webPageDetails",
            pa.struct(
                [
                    pa.field("name", pa.string()),
                    pa.field("URL", pa.string()),
                    pa.field("pageViews", MEASURE_TYPE),
                ]
            ),
        )
    ]
)

#: The ExperienceEvent file schema (Parquet column types; JSONL keys in this order).
EVENT_SCHEMA = pa.schema(
    [
        pa.field("_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.string(), nullable=False),
        pa.field("eventType", pa.string(), nullable=False),
        pa.field("identityMap", IDENTITY_MAP_TYPE, nullable=False),
        pa.field("commerce", COMMERCE_TYPE),
        pa.field("productListItems", pa.list_(PRODUCT_LIST_ITEM_TYPE)),
        pa.field("web", WEB_TYPE),
    ]
)

#: The Individual Profile file schema written by the generator (identities only).
PROFILE_SCHEMA = pa.schema(
    [
        pa.field("_id", pa.string(), nullable=False),
        pa.field("identityMap", IDENTITY_MAP_TYPE, nullable=False),
    ]
)

# Fixed writer options: same table + same pyarrow version => same bytes. Parquet files carry
# no wall-clock metadata; ``created_by`` names the pyarrow version.
PARQUET_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 1,  # level 3 is ~15% slower here and no smaller
    "write_statistics": True,
    "version": "2.6",
    "data_page_version": "1.0",
    "write_page_index": False,
    "store_schema": True,
}
ROW_GROUP_SIZE = 512 * 1024
#: Leaf columns that are unique per row: dictionary encoding only costs time there.
NO_DICTIONARY = frozenset({"_id", "timestamp", "commerce.order.purchaseID"})

_FORMATS = ("parquet", "jsonl")
_ID_FORBIDDEN = re.compile(r"[:\s]")
_RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")


# --------------------------------------------------------------------------- identities


def sha256_email(raw: str) -> str:
    """Hash an e-mail the way AEP's ``Email_LC_SHA256`` namespace expects: trim, lowercase, SHA-256 hex."""
    return hashlib.sha256(raw.strip().lower().encode("utf-8")).hexdigest()


def event_id(*parts: object) -> str:
    """A deterministic ``_id`` from its parts: 32 hex chars of SHA-256, so never a colon (AEP rule)."""
    joined = "\x1f".join(str(p) for p in parts)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:32]


def format_timestamps_ms(epoch_ms: np.ndarray | pa.Array) -> pa.StringArray:
    """Epoch milliseconds (UTC) -> RFC 3339 strings like ``2024-03-01T12:34:56.123Z`` (vectorized)."""
    arr = pa.array(np.asarray(epoch_ms, dtype=np.int64), type=pa.int64()).cast(pa.timestamp("ms"))
    # cast-to-string gives "YYYY-MM-DD HH:MM:SS.mmm" and is ~7x faster than pc.strftime
    text = pc.replace_substring(arr.cast(pa.string()), " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(text, "Z", "")


# --------------------------------------------------------------------------- JSON Lines


def _escape_json_strings(arr: pa.Array) -> pa.Array:
    """Quote and escape a string array for JSON; fall back to ``json.dumps`` for control chars."""
    esc = pc.replace_substring(arr, "\\", "\\\\")
    esc = pc.replace_substring(esc, '"', '\\"')
    quoted = pc.binary_join_element_wise('"', esc, '"', "")
    has_ctrl = pc.match_substring_regex(arr, r"[\x00-\x1f\x7f]")
    if pc.any(has_ctrl).as_py():
        values = arr.to_pylist()
        fixed = [
            None if v is None else json.dumps(v, ensure_ascii=False) for v in values
        ]  # rare path: only when some value holds a control character
        quoted = pa.array(fixed, type=pa.string())
    return quoted


def _null_where(values: pa.Array, mask: pa.Array) -> pa.Array:
    """``values`` with nulls where ``mask`` is true (mask nulls count as true)."""
    mask = pc.fill_null(mask, True)
    if not pc.any(mask).as_py():
        return values
    valid = pc.and_not(values.is_valid(), mask)
    if values.offset == 0 and valid.offset == 0 and pa.types.is_string(values.type):
        # re-use the string buffers with a new validity bitmap: much cheaper than if_else
        buffers = values.buffers()
        return pa.StringArray.from_buffers(len(values), buffers[1], buffers[2], valid.buffers()[1])
    return pc.if_else(mask, pa.scalar(None, values.type), values)


def _wrap(open_: str, body: pa.Array, close: str) -> pa.Array:
    """``open_ + body + close``; null or empty bodies give null (AEP rejects empty objects/arrays)."""
    wrapped = pc.binary_join_element_wise(open_, body, close, "")
    return _null_where(wrapped, pc.equal(body, ""))


def _join_lists(offsets: pa.Array, child: pa.Array, valid: pa.Array) -> pa.Array:
    """Join child JSON strings per list (``offsets`` index into ``child``); null where list is null."""
    if pa.types.is_int64(offsets.type):
        lists = pa.LargeListArray.from_arrays(offsets, child)
    else:
        lists = pa.ListArray.from_arrays(offsets, child)
    joined = pc.binary_join(lists, ",")
    lengths = pc.list_value_length(lists)
    bad = pc.and_(pc.and_(valid, pc.is_null(joined)), pc.greater(lengths, 0))
    if pc.any(bad).as_py():
        raise ValueError("a list holds a null element; AEP accepts no nulls inside arrays")
    return _null_where(joined, pc.invert(valid))


def _json_values(arr: pa.Array) -> pa.Array:
    """JSON text for each value of ``arr``; null means 'omit this key'."""
    typ = arr.type
    if pa.types.is_dictionary(typ):
        arr = arr.dictionary_decode()
        typ = arr.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        arr = arr.cast(pa.string())
        return _null_where(_escape_json_strings(arr), pc.equal(arr, ""))
    if pa.types.is_boolean(typ):
        return pc.if_else(arr, "true", "false")
    if pa.types.is_integer(typ):
        return arr.cast(pa.string())
    if pa.types.is_floating(typ):
        finite = pc.is_finite(arr)
        if not pc.all(pc.or_(pc.fill_null(finite, True), pc.is_null(arr))).as_py():
            raise ValueError("NaN or infinite number cannot be written as JSON")
        return arr.cast(pa.float64()).cast(pa.string())
    if pa.types.is_struct(typ):
        children = arr.flatten()  # honours slicing and merges parent nulls into children
        if not children:
            return pa.nulls(len(arr), pa.string())
        values = [_json_values(child) for child in children]
        keys = [json.dumps(field.name) + ":" for field in typ]
        # Members are joined with absent ones as "". Commas: a member present in every valid
        # row (the anchor) takes none, members before it a trailing one, after it a leading
        # one. Without an anchor every member takes a leading comma and the first char is cut.
        # (null_handling="skip" drops all-null rows in pyarrow 26, so it is not used.)
        anchor = next((i for i, v in enumerate(values) if v.null_count == arr.null_count), None)
        parts = []
        for i, (key, value) in enumerate(zip(keys, values, strict=True)):
            if anchor is None or i > anchor:
                parts.append(pc.binary_join_element_wise("," + key, value, ""))
            elif i < anchor:
                parts.append(pc.binary_join_element_wise(key, value, ",", ""))
            else:
                parts.append(pc.binary_join_element_wise(key, value, ""))
        if len(parts) == 1:
            body = pc.fill_null(parts[0], "")
        else:
            body = pc.binary_join_element_wise(
                *parts, "", null_handling="replace", null_replacement=""
            )
        if anchor is None:
            body = pc.utf8_slice_codeunits(body, 1)
        body = _null_where(body, arr.is_null())
        return _wrap("{", body, "}")
    if pa.types.is_map(typ):
        keys = _json_values(arr.keys)
        items = _json_values(arr.items)
        entries = pc.binary_join_element_wise(keys, ":", items, "")
        joined = _join_lists(arr.offsets, entries, arr.is_valid())
        return _wrap("{", joined, "}")
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        child = _json_values(arr.values)
        joined = _join_lists(arr.offsets, child, arr.is_valid())
        return _wrap("[", joined, "]")
    raise TypeError(f"no JSON writer for Arrow type {typ}")


def table_to_json_lines(table: pa.Table) -> pa.StringArray:
    """One compact JSON object per row, keys in schema order, null/empty values omitted (vectorized)."""
    table = table.combine_chunks()
    if table.num_rows == 0:
        return pa.array([], type=pa.string())
    struct = pa.StructArray.from_arrays(
        [c.chunk(0) if c.num_chunks else pa.array([], c.type) for c in table.columns],
        fields=list(table.schema),
    )
    out = _json_values(struct)
    if out.null_count:
        raise ValueError("a row serialises to an empty JSON object")
    return out


def encode_jsonl(table: pa.Table) -> bytes:
    """The JSON Lines file body for ``table`` (one object per line, each line ends with newline)."""
    lines = table_to_json_lines(table)
    if len(lines) == 0:
        return b""
    with_nl = pc.binary_join_element_wise(lines, "\n", "")
    # concatenated UTF-8 data of the string array = the file body, no Python-level join
    offsets = np.frombuffer(with_nl.buffers()[1], dtype=np.int32)
    start, end = int(offsets[with_nl.offset]), int(offsets[with_nl.offset + len(with_nl)])
    return with_nl.buffers()[2].to_pybytes()[start:end]


# --------------------------------------------------------------------------- writers


def _leaf_paths(typ: pa.DataType, prefix: str) -> list[str]:
    """Parquet leaf column paths (``a.list.element.b``) of an Arrow type."""
    if pa.types.is_struct(typ):
        return [p for f in typ for p in _leaf_paths(f.type, f"{prefix}.{f.name}")]
    if pa.types.is_map(typ):
        return _leaf_paths(typ.key_type, f"{prefix}.key_value.key") + _leaf_paths(
            typ.item_type, f"{prefix}.key_value.value"
        )
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return _leaf_paths(typ.value_type, f"{prefix}.list.element")
    return [prefix]


def _parquet_options(schema: pa.Schema) -> dict[str, Any]:
    leaves = [p for f in schema for p in _leaf_paths(f.type, f.name)]
    dictionary = [p for p in leaves if p not in NO_DICTIONARY]
    use_dictionary: bool | list[str] = True if len(dictionary) == len(leaves) else dictionary
    return {**PARQUET_WRITE_OPTIONS, "use_dictionary": use_dictionary}


def _check_fmt(fmt: str) -> None:
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {_FORMATS}, got {fmt!r}")


def _tmp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def write_table(
    table: pa.Table, path: Path, fmt: str = "parquet", *, row_group_size: int = ROW_GROUP_SIZE
) -> int:
    """Write ``table`` deterministically as Parquet or JSON Lines (atomic rename); returns bytes written."""
    _check_fmt(fmt)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    if fmt == "parquet":
        pq.write_table(table, tmp, row_group_size=row_group_size, **_parquet_options(table.schema))
    else:
        tmp.write_bytes(encode_jsonl(table))
    os.replace(tmp, path)
    return path.stat().st_size


class EventFileWriter:
    """Streams event tables into ``<dir>/<prefix>-00000.<ext>``, ``-00001``, ... rolling at ``max_rows``.

    A chunk is never split across files, so a file holds whole chunks; with deterministic
    chunks the file boundaries (and bytes) are deterministic too.
    """

    def __init__(
        self,
        directory: Path,
        *,
        fmt: str = "parquet",
        prefix: str = "part",
        max_rows: int = 2_000_000,
        schema: pa.Schema = EVENT_SCHEMA,
    ) -> None:
        _check_fmt(fmt)
        self.directory = Path(directory)
        self.fmt = fmt
        self.prefix = prefix
        self.max_rows = max_rows
        self.schema = schema
        self.paths: list[Path] = []
        self.rows_written = 0
        self._rows_in_file = 0
        self._pq_writer: pq.ParquetWriter | None = None
        self._fh: Any = None
        self._tmp: Path | None = None

    def __enter__(self) -> EventFileWriter:
        self.directory.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._close_current(commit=exc_type is None)

    def _open_next(self) -> None:
        self._close_current(commit=True)
        path = self.directory / f"{self.prefix}-{len(self.paths):05d}.{self.fmt}"
        self._tmp = _tmp_path(path)
        if self.fmt == "parquet":
            self._pq_writer = pq.ParquetWriter(
                self._tmp, self.schema, **_parquet_options(self.schema)
            )
        else:
            self._fh = open(self._tmp, "wb")  # noqa: SIM115 - closed in _close_current
        self.paths.append(path)
        self._rows_in_file = 0

    def _close_current(self, *, commit: bool) -> None:
        if self._pq_writer is not None:
            self._pq_writer.close()
            self._pq_writer = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tmp is not None:
            if commit:
                os.replace(self._tmp, self.paths[-1])
            else:
                self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def write(self, table: pa.Table, *, encoded: bytes | None = None) -> None:
        """Append one chunk (cast to the writer's schema).

        For JSON Lines, ``encoded`` may carry ``encode_jsonl(table)`` computed elsewhere (e.g. in
        a worker process) so the writer only copies bytes.
        """
        if table.num_rows == 0:
            return
        if self._tmp is None or (
            self._rows_in_file > 0 and self._rows_in_file + table.num_rows > self.max_rows
        ):
            self._open_next()
        if self._pq_writer is not None:
            if table.schema != self.schema:
                table = table.cast(self.schema)
            self._pq_writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
        else:
            self._fh.write(encoded if encoded is not None else encode_jsonl(table))
        self._rows_in_file += table.num_rows
        self.rows_written += table.num_rows


# --------------------------------------------------------------------------- rules in code


def _walk_nulls(value: Any, path: str, problems: list[str]) -> None:
    if value is None:
        problems.append(f"{path} is null")
    elif isinstance(value, Mapping):
        if not value:
            problems.append(f"{path} is an empty object")
        for k, v in value.items():
            _walk_nulls(v, f"{path}.{k}", problems)
    elif isinstance(value, list):
        if not value:
            problems.append(f"{path} is an empty array")
        for i, v in enumerate(value):
            _walk_nulls(v, f"{path}[{i}]", problems)
    elif isinstance(value, str) and value == "":
        problems.append(f"{path} is an empty string")
    elif isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{path} is not finite")


def check_event_rules(event: Mapping[str, Any]) -> list[str]:
    """Rules JSON Schema cannot express (see shared/xdm/README.md); returns problems, empty if fine.

    Exactly one ``primary`` identity across all namespaces, no nulls/empties, ``_id`` without
    colons, an RFC 3339 UTC timestamp, and at most 10 KB serialised. Purchase totals must equal
    the sum of their line totals to the cent.
    """
    problems: list[str] = []
    _walk_nulls(dict(event), "$", problems)
    identity_map = event.get("identityMap") or {}
    primaries = sum(
        1 for items in identity_map.values() for item in items or [] if item.get("primary") is True
    )
    if primaries != 1:
        problems.append(f"identityMap has {primaries} primary identities, expected exactly 1")
    _id = event.get("_id", "")
    if not isinstance(_id, str) or _ID_FORBIDDEN.search(_id):
        problems.append(f"_id {_id!r} contains a colon or whitespace")
    ts = event.get("timestamp", "")
    if not isinstance(ts, str) or not _RFC3339_MS.match(ts):
        problems.append(f"timestamp {ts!r} is not RFC 3339 UTC")
    size = len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > MAX_EVENT_BYTES:
        problems.append(f"event is {size} bytes, over the 10 KB guardrail")
    order = ((event.get("commerce") or {}).get("order")) or {}
    if "priceTotal" in order:
        lines = event.get("productListItems") or []
        cents = round(sum(line.get("priceTotal", 0.0) for line in lines) * 100)
        if cents != round(order["priceTotal"] * 100):
            problems.append("order priceTotal differs from the sum of its line priceTotals")
    return problems


def drop_nulls(value: Any) -> Any:
    """Recursively drop null values (what a Parquet row looks like as an AEP JSON record)."""
    if isinstance(value, Mapping):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def parquet_rows_as_records(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Turn ``Table.to_pylist()`` rows (maps come back as key/value tuples) into JSON-like records."""

    def convert(value: Any) -> Any:
        if isinstance(value, list) and value and isinstance(value[0], tuple):
            return {k: convert(v) for k, v in value}
        if isinstance(value, Mapping):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    return [drop_nulls(convert(dict(r))) for r in rows]
