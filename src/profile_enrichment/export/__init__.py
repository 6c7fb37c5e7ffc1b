"""XDM profile-attribute export: field group payloads, records, validation, batch files.

Typical flow::

    rows = read_profile_insights(warehouse)
    records = build_records(rows, tenant, as_of)
    batches = write_batches(records, out_dir, tenant=..., as_of=..., model_versions=...,
                            schema_id=...)
"""

from __future__ import annotations

from .batches import BatchInfo, arrow_schema, clean_tmp, validate_batch, write_batches
from .layout import MODEL_INSIGHTS, Field, tenant_key, validate_tenant_id
from .payloads import (
    dataset_payload,
    field_group_payload,
    model_insights_schema,
    record_json_schema,
    schema_payload,
)
from .records import build_record, build_records, read_profile_insights, record_id
from .validate import MAX_RECORD_BYTES, RecordValidator, Reject, serialize, validate_records

__all__ = [
    "MAX_RECORD_BYTES",
    "MODEL_INSIGHTS",
    "BatchInfo",
    "Field",
    "RecordValidator",
    "Reject",
    "arrow_schema",
    "build_record",
    "build_records",
    "clean_tmp",
    "dataset_payload",
    "field_group_payload",
    "model_insights_schema",
    "read_profile_insights",
    "record_id",
    "record_json_schema",
    "schema_payload",
    "serialize",
    "tenant_key",
    "validate_batch",
    "validate_records",
    "validate_tenant_id",
    "write_batches",
]
