"""The `export` command end to end: warehouse -> payloads + validated batches.

Reads `profile_insights` from the DuckDB warehouse, writes the Schema Registry and Catalog
payloads (generated from the same layout as the records) and the record batches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from profile_enrichment.errors import UserError
from profile_enrichment.export.batches import (
    PAYLOADS,
    BatchInfo,
    clean_tmp,
    write_checked_batches,
)
from profile_enrichment.export.layout import validate_tenant_id
from profile_enrichment.export.parallel import (
    MIN_ROWS_FOR_WORKERS,
    checked_in_workers,
    default_workers,
)
from profile_enrichment.export.payloads import dataset_payload, field_group_payload, schema_payload
from profile_enrichment.export.records import read_profile_batches
from profile_enrichment.export.validate import MAX_RECORD_BYTES
from profile_enrichment.fsutil import atomic_write_text

SCHEMA_ID_PLACEHOLDER = "{{SCHEMA_ID}}"


@dataclass
class ExportResult:
    """What an export wrote."""

    as_of_date: str
    payload_dir: Path
    batches: list[BatchInfo]

    @property
    def records(self) -> int:
        return sum(b.record_count for b in self.batches)

    @property
    def rejects(self) -> int:
        return sum(b.reject_count for b in self.batches)


def _run_facts(warehouse: Path) -> tuple[str, dict[str, str], int]:
    """The as-of date, the model versions of the scores and the number of rows."""
    import duckdb

    if not warehouse.exists():
        raise UserError(
            f"warehouse not found: {warehouse}", hint="run `profile-enrichment run` first"
        )
    try:
        con = duckdb.connect(str(warehouse), read_only=True)
    except duckdb.IOException as err:
        raise UserError(f"cannot open the warehouse {warehouse}: {err}") from err
    try:
        try:
            row = con.sql(
                "select cast(max(score_date) as varchar), "
                "max(churn_model_version), max(conversion_model_version), "
                "max(clv_model_version), max(segment_model_version), count(*) "
                "from profile_insights"
            ).fetchall()[0]
        except duckdb.CatalogException as err:
            raise UserError(
                f"{warehouse} has no profile_insights table",
                hint="run `profile-enrichment run` first",
            ) from err
    finally:
        con.close()
    as_of, churn, conversion, clv, segment, rows = row
    if as_of is None:
        raise UserError("profile_insights is empty: there is nothing to export")
    versions = {
        name: version
        for name, version in (
            ("churn", churn),
            ("conversion", conversion),
            ("clv", clv),
            ("segment", segment),
        )
        if version
    }
    return as_of, versions, rows


def export_profiles(
    warehouse: Path,
    out_dir: Path,
    *,
    tenant: str,
    fmt: str = "jsonl",
    max_file_bytes: int | None = None,
    workers: int | None = None,
) -> ExportResult:
    """Write payloads to OUT/payloads/ and validated record batches to OUT/batch-<id>/.

    ``workers`` processes build and validate the records (:mod:`.parallel`); the default is
    one per available core from :data:`.parallel.MIN_ROWS_FOR_WORKERS` rows on, else one.
    Any number of workers writes the same bytes.
    """
    tenant = validate_tenant_id(tenant)
    if fmt not in ("jsonl", "parquet"):
        raise UserError(f"--format must be jsonl or parquet, got {fmt!r}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    as_of, versions, rows = _run_facts(warehouse)
    if workers is None:
        workers = default_workers() if rows >= MIN_ROWS_FOR_WORKERS else 1
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_tmp(out_dir)
    payload_dir = out_dir / PAYLOADS
    payload_dir.mkdir(exist_ok=True)
    for name, payload in (
        ("fieldgroup.json", field_group_payload(tenant)),
        ("schema.json", schema_payload(tenant)),
        ("dataset.json", dataset_payload(SCHEMA_ID_PLACEHOLDER)),
    ):
        atomic_write_text(payload_dir / name, json.dumps(payload, indent=2, sort_keys=True) + "\n")
    options = {} if max_file_bytes is None else {"max_file_bytes": max_file_bytes}
    options |= {
        "tenant": tenant,
        "as_of": as_of,
        "model_versions": versions,
        "schema_id": SCHEMA_ID_PLACEHOLDER,
        "fmt": fmt,
        "max_record_bytes": MAX_RECORD_BYTES,
    }
    checked = checked_in_workers(
        read_profile_batches(warehouse),
        tenant=tenant,
        as_of=as_of,
        max_record_bytes=MAX_RECORD_BYTES,
        keep_records=fmt == "parquet",
        workers=workers,
    )
    batches = write_checked_batches(checked, out_dir, **options)
    return ExportResult(as_of, payload_dir, batches)
