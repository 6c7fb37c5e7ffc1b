"""Run-time validation of exported records.

JSON Schema (compiled once with jsonschema-rs, a few microseconds a record) plus the rules
JSON Schema cannot express: exactly one primary identity across all namespaces, and the
serialized record at most 100 KB (AEP Profile batch guardrail). Records are serialized with
orjson: a million of them are exported in seconds, so the per-record cost is what counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jsonschema_rs
import orjson

from .layout import validate_tenant_id
from .payloads import record_json_schema

MAX_RECORD_BYTES = 100 * 1024
#: At most this many schema errors are reported for one record.
MAX_SCHEMA_ERRORS = 5


def serialize(record: dict[str, Any]) -> bytes:
    """Canonical JSON bytes of a record: compact, sorted keys, UTF-8, no NaN.

    orjson writes NaN and infinities as ``null``; a record holding one is refused here
    (``ValueError``) instead, as no exported field may be null.
    """
    data = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    if b"null" in data and _has_non_finite(record):  # "null" is rare: a string may hold it
        raise ValueError("Out of range float values are not JSON compliant (NaN or infinity)")
    return data


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    return False


@lru_cache(maxsize=16)
def _compiled(tenant: str) -> Any:
    return jsonschema_rs.validator_for(record_json_schema(tenant))


def _schema_reasons(validator: Any, record: Any) -> list[str]:
    """``schema: <path>: <message>`` for the first :data:`MAX_SCHEMA_ERRORS` errors."""
    reasons = []
    for error in validator.iter_errors(record):
        path = "/".join(str(part) for part in error.instance_path) or "(record)"
        reasons.append(f"schema: {path}: {error.message}")
        if len(reasons) == MAX_SCHEMA_ERRORS:
            break
    return reasons


@dataclass
class Reject:
    """A record that failed validation, with the reasons."""

    record: dict[str, Any]
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"reasons": self.reasons, "record": self.record}


class RecordValidator:
    """Validates records for one tenant; :meth:`check` returns reasons and the serialized bytes."""

    def __init__(self, tenant: str, max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        self.tenant = validate_tenant_id(tenant)
        self.max_record_bytes = max_record_bytes
        self._schema = _compiled(self.tenant)

    def check(self, record: dict[str, Any]) -> tuple[list[str], bytes | None]:
        """Return (reasons, canonical bytes). No reasons means the record is valid."""
        reasons: list[str] = []
        if not self._schema.is_valid(record):
            reasons.extend(_schema_reasons(self._schema, record))
        primaries = _primary_count(record.get("identityMap"))
        if primaries != 1:
            reasons.append(f"identity: expected exactly one primary identity, found {primaries}")
        try:
            data = serialize(record)
        except (TypeError, ValueError) as err:
            reasons.append(f"serialize: {err}")
            return reasons, None
        if len(data) > self.max_record_bytes:
            reasons.append(
                f"size: record is {len(data)} bytes, limit is {self.max_record_bytes} bytes"
            )
        return reasons, data


def _primary_count(idmap: Any) -> int:
    if not isinstance(idmap, dict):
        return 0
    return sum(
        1
        for items in idmap.values()
        if isinstance(items, list)
        for item in items
        if isinstance(item, dict) and item.get("primary") is True
    )


def validate_records(
    records: Iterable[dict[str, Any]], tenant: str, max_record_bytes: int = MAX_RECORD_BYTES
) -> tuple[list[dict[str, Any]], list[Reject]]:
    """Split ``records`` into (valid records, rejects with reasons). Order is kept."""
    validator = RecordValidator(tenant, max_record_bytes)
    valid: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    for record in records:
        reasons, _ = validator.check(record)
        if reasons:
            rejects.append(Reject(record, reasons))
        else:
            valid.append(record)
    return valid, rejects
