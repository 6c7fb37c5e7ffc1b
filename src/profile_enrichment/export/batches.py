"""Write validated records as AEP batch folders: atomic, idempotent, split by the guardrails.

Layout of ``out_dir``::

    batch-<id>/manifest.json      what to upload (files, counts, bytes, sha256) and where to
    batch-<id>/part-00000.jsonl   records, one compact JSON object per line (sorted keys)
    batch-<id>/rejects.jsonl      invalid records with reasons (never uploaded)
    .tmp-*                        a batch being written; removed by the next run if left over

A batch is written into ``.tmp-*``, fsynced, then renamed to ``batch-<id>`` in one step, so a
``batch-*`` folder always holds a complete manifest. ``<id>`` is a hash of the records and
the settings: the same inputs give the same id and byte-identical files, and a rerun keeps
the complete batch that is already there instead of writing a second copy.
One writer per ``out_dir`` at a time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profile_enrichment.errors import UserError
from profile_enrichment.fsutil import fsync_dir

from .layout import MODEL_INSIGHTS, Field, tenant_key, validate_tenant_id
from .validate import MAX_RECORD_BYTES, RecordValidator, serialize

MB = 1024 * 1024
GB = 1024 * MB
MAX_FILE_BYTES = 256 * MB
MAX_FILES_PER_BATCH = 1500
MAX_BATCH_BYTES = 100 * GB
MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"
TMP_PREFIX = ".tmp-"
PAYLOADS = "payloads"  # the AEP payloads (field group, schema, dataset) beside the batches
BATCH_PREFIX = "batch-"
DATASET_ID_PLACEHOLDER = "{{DATASET_ID}}"
# fmt argument -> (file extension, AEP inputFormat.format, also the manifest's "format")
FORMATS = {"jsonl": ("jsonl", "json"), "json": ("jsonl", "json"), "parquet": ("parquet", "parquet")}
UPLOAD_STATE = "upload_state.json"  # written into the batch folder by the uploader
_CHUNK = 1024 * 1024


@dataclass
class BatchInfo:
    """One written (or reused) batch."""

    batch_id: str
    path: Path
    record_count: int
    reject_count: int
    bytes: int
    files: list[dict[str, Any]] = field(default_factory=list)
    reused: bool = False


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def clean_tmp(out_dir: Path) -> list[Path]:
    """Remove leftovers of a crashed run (``.tmp-*`` batches, half-written payload files
    ``payloads/.*.tmp``); returns what was removed."""
    removed = []
    for p in sorted(out_dir.glob(TMP_PREFIX + "*")):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    for p in sorted((out_dir / PAYLOADS).glob(".*.tmp")):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


# ----------------------------------------------------------------------------------- parquet
def _arrow_type(f: Field):
    import pyarrow as pa

    if f.xdm_type == "date":
        return pa.date32()
    if f.xdm_type == "string":
        return pa.string()
    if f.xdm_type == "number":
        return pa.float64()
    if f.xdm_type == "integer":
        return pa.int64()
    if f.xdm_type == "map":
        return pa.map_(pa.string(), pa.string())
    struct = pa.struct([pa.field(c.name, _arrow_type(c)) for c in f.children])
    return pa.list_(struct) if f.xdm_type == "array" else struct


def arrow_schema(tenant: str):
    """Explicit Arrow schema of a record, derived from the layout (stable across files)."""
    import pyarrow as pa

    identity = pa.struct(
        [("id", pa.string()), ("authenticatedState", pa.string()), ("primary", pa.bool_())]
    )
    tenant_struct = pa.struct([pa.field("modelInsights", _arrow_type(MODEL_INSIGHTS))])
    return pa.schema(
        [
            pa.field("_id", pa.string()),
            pa.field("identityMap", pa.map_(pa.string(), pa.list_(identity))),
            pa.field(tenant_key(tenant), tenant_struct),
        ]
    )


def _to_arrow_values(value: Any, f: Field) -> Any:
    """ISO date strings -> dates, following the layout."""
    if value is None:
        return None
    if f.xdm_type == "date":
        return dt.date.fromisoformat(value)
    if f.xdm_type == "object":
        return {c.name: _to_arrow_values(value.get(c.name), c) for c in f.children}
    if f.xdm_type == "array":
        return [{c.name: item.get(c.name) for c in f.children} for item in value]
    return value


def _from_arrow_values(value: Any) -> Any:
    """Arrow to_pylist output -> JSON record shape (dates as ISO, maps as dicts, no nulls)."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list):
        if value and all(isinstance(x, tuple) and len(x) == 2 for x in value):
            return {k: _from_arrow_values(v) for k, v in value}
        return [_from_arrow_values(v) for v in value]
    if isinstance(value, dict):
        out = {k: _from_arrow_values(v) for k, v in value.items() if v is not None}
        return {k: v for k, v in out.items() if v is not None}
    return value


def _parquet_row(record: dict[str, Any], key: str) -> dict[str, Any]:
    tenant_obj = record.get(key, {})
    return {
        "_id": record.get("_id"),
        "identityMap": record.get("identityMap"),
        key: {"modelInsights": _to_arrow_values(tenant_obj.get("modelInsights"), MODEL_INSIGHTS)},
    }


def read_batch_records(batch_dir: Path, manifest: Mapping[str, Any]):
    """Yield (file name, record) for every record in the batch's data files."""
    fmt = manifest.get("format", "json")
    for entry in manifest.get("files", []):
        path = batch_dir / entry["name"]
        if fmt == "parquet":
            import pyarrow.parquet as pq

            for row in pq.read_table(path).to_pylist():
                yield entry["name"], _from_arrow_values(row)
        else:
            with open(path, "rb") as fh:
                for line in fh:
                    yield entry["name"], json.loads(line)


# ------------------------------------------------------------------------------------ writer
class _Batch:
    """One batch being written into a temporary folder."""

    def __init__(self, out_dir: Path, settings: dict[str, Any], seq: int, fmt: str, key: str):
        self.out_dir = out_dir
        self.settings = settings
        self.fmt = "parquet" if fmt == "parquet" else "jsonl"
        self.key = key
        self.ext = FORMATS[fmt][0]
        self.tmp = out_dir / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        self.tmp.mkdir()
        self.hash = hashlib.sha256()
        self.hash.update(serialize({**settings, "sequence": seq}))
        self.files: list[dict[str, Any]] = []
        self.bytes = 0
        self.records = 0
        self.rejects = 0
        self._fh = None
        self._rejects_fh = None
        self._cur_bytes = 0
        self._cur_records = 0
        self._rows: list[dict[str, Any]] = []

    # --- sizing
    def open_file_bytes(self) -> int:
        return self._cur_bytes

    def has_open_file(self) -> bool:
        return self._cur_records > 0

    # --- writing
    def add(self, record: dict[str, Any] | None, data: bytes) -> None:
        line = data + b"\n"
        if self.fmt == "jsonl":
            if self._fh is None:
                self._fh = open(self.tmp / self._next_name(), "wb", buffering=_CHUNK)  # noqa: SIM115
            self._fh.write(line)
        else:
            self._rows.append(_parquet_row(record, self.key))
        self._cur_bytes += len(line)
        self._cur_records += 1

    def add_reject(self, record: dict[str, Any], reasons: list[str]) -> None:
        line = (
            json.dumps(
                {"reasons": reasons, "record": record},
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
                default=str,
            ).encode("utf-8")
            + b"\n"
        )
        if self._rejects_fh is None:
            self._rejects_fh = open(self.tmp / REJECTS, "wb")  # noqa: SIM115
        self._rejects_fh.write(line)
        self.rejects += 1

    def _next_name(self) -> str:
        return f"part-{len(self.files):05d}.{self.ext}"

    def close_file(self) -> None:
        if not self._cur_records:
            return
        name = self._next_name()
        path = self.tmp / name
        if self.fmt == "jsonl":
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pylist(self._rows, schema=arrow_schema(self.key))
            pq.write_table(table, path, compression="zstd")
            self._rows = []
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
        size = path.stat().st_size
        self.files.append(
            {
                "name": name,
                "records": self._cur_records,
                "bytes": size,
                "sha256": _sha256_file(path),
            }
        )
        self.bytes += size
        self.records += self._cur_records
        self._cur_bytes = 0
        self._cur_records = 0

    def finish(self) -> BatchInfo:
        """Write the manifest, fsync, and rename into ``batch-<id>`` (or keep an existing one)."""
        self.close_file()
        manifest: dict[str, Any] = {
            **self.settings,
            "recordCount": self.records,
            "rejectCount": self.rejects,
            "totalBytes": self.bytes,
            "files": self.files,
        }
        if self._rejects_fh is not None:
            self._rejects_fh.flush()
            os.fsync(self._rejects_fh.fileno())
            self._rejects_fh.close()
            rpath = self.tmp / REJECTS
            manifest["rejects"] = {
                "name": REJECTS,
                "records": self.rejects,
                "bytes": rpath.stat().st_size,
                "sha256": _sha256_file(rpath),
            }
        # the records enter the id through the files' sha256 (computed once, for the
        # manifest): their order, their bytes and where the files split
        self.hash.update(serialize({"files": self.files, "rejects": manifest.get("rejects")}))
        batch_id = self.hash.hexdigest()[:32]
        manifest = {"batchId": batch_id, **manifest}
        mpath = self.tmp / MANIFEST
        with open(mpath, "wb") as fh:
            fh.write(json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(self.tmp)
        target = self.out_dir / f"{BATCH_PREFIX}{batch_id}"
        reused = False
        if target.exists():
            if not validate_batch(target, check_records=False):
                shutil.rmtree(self.tmp)
                reused = True
            else:  # a damaged copy (edited by hand?): replace it atomically enough
                stale = self.out_dir / f"{TMP_PREFIX}stale-{uuid.uuid4().hex}"
                if (target / UPLOAD_STATE).is_file():  # same manifest bytes: upload can resume
                    shutil.copy2(target / UPLOAD_STATE, self.tmp / UPLOAD_STATE)
                os.rename(target, stale)
                os.rename(self.tmp, target)
                shutil.rmtree(stale, ignore_errors=True)
        else:
            os.rename(self.tmp, target)
        fsync_dir(self.out_dir)
        return BatchInfo(
            batch_id=batch_id,
            path=target,
            record_count=self.records,
            reject_count=self.rejects,
            bytes=self.bytes,
            files=self.files,
            reused=reused,
        )


#: One record after validation: (the record, or None when not needed; reasons; JSON bytes).
#: No reasons means valid. The record is needed for a reject and for a Parquet row.
Checked = tuple[dict[str, Any] | None, list[str], bytes | None]


def write_batches(
    records: Iterable[dict[str, Any]],
    out_dir: str | Path,
    *,
    tenant: str,
    max_record_bytes: int = MAX_RECORD_BYTES,
    **options: Any,
) -> list[BatchInfo]:
    """Validate ``records`` and write them as one or more batch folders under ``out_dir``
    (see :func:`write_checked_batches` for the options)."""
    validator = RecordValidator(validate_tenant_id(tenant), max_record_bytes)
    checked = ((record, *validator.check(record)) for record in records)
    return write_checked_batches(
        checked, out_dir, tenant=tenant, max_record_bytes=max_record_bytes, **options
    )


def write_checked_batches(
    checked: Iterable[Checked],
    out_dir: str | Path,
    *,
    tenant: str,
    as_of: str | dt.date,
    model_versions: Mapping[str, str],
    schema_id: str,
    dataset_id: str = DATASET_ID_PLACEHOLDER,
    fmt: str = "jsonl",  # or "parquet"; the manifest records AEP's name ("json"/"parquet")
    max_file_bytes: int = MAX_FILE_BYTES,
    max_files_per_batch: int = MAX_FILES_PER_BATCH,
    max_batch_bytes: int = MAX_BATCH_BYTES,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> list[BatchInfo]:
    """Write validated records (``checked``, in order) as batch folders under ``out_dir``.

    ``checked`` must have been validated with ``max_record_bytes`` and the same tenant (see
    :class:`.validate.RecordValidator`): :func:`write_batches` does that for records it is
    given, and :func:`.parallel.checked_in_workers` for ``profile_insights`` batches (the
    export's one path, in one process or several).

    Files are split at ``max_file_bytes`` (a single larger record gets a file of its own);
    a new batch starts when ``max_files_per_batch`` or ``max_batch_bytes`` would be exceeded.
    For Parquet the split uses the records' JSON size, an upper bound of the Parquet size.
    Invalid records go to ``rejects.jsonl`` of the batch being filled, with reasons; check
    ``sum(b.reject_count for b in result)``. Returns [] when there are no records at all.
    """
    tenant = validate_tenant_id(tenant)
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}", hint="use jsonl or parquet")
    if min(max_file_bytes, max_files_per_batch, max_batch_bytes) < 1:
        raise UserError("file and batch limits must be positive")
    as_of_s = as_of.isoformat() if isinstance(as_of, dt.date) else str(as_of)
    try:
        dt.date.fromisoformat(as_of_s)
    except ValueError as err:
        raise UserError(f"invalid as-of date {as_of_s!r}", hint="use YYYY-MM-DD") from err
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean_tmp(out)

    key = tenant_key(tenant)
    settings = {
        "tenantId": tenant,
        "asOfDate": as_of_s,
        "modelVersions": dict(sorted(model_versions.items())),
        "schemaId": schema_id,
        "datasetId": dataset_id,
        "format": FORMATS[fmt][1],
        "inputFormat": {"format": FORMATS[fmt][1]},
        "limits": {
            "maxFileBytes": max_file_bytes,
            "maxFilesPerBatch": max_files_per_batch,
            "maxBatchBytes": max_batch_bytes,
            "maxRecordBytes": max_record_bytes,
        },
    }
    done: list[BatchInfo] = []
    batch: _Batch | None = None
    try:
        for record, reasons, data in checked:
            if batch is None:
                batch = _Batch(out, settings, len(done), fmt, key)
            if reasons:
                batch.add_reject(record, reasons)
                continue
            size = len(data) + 1
            if batch.has_open_file() and batch.open_file_bytes() + size > max_file_bytes:
                batch.close_file()
            if not batch.has_open_file() and (
                len(batch.files) >= max_files_per_batch
                or (batch.records and batch.bytes + size > max_batch_bytes)
            ):
                done.append(batch.finish())
                batch = _Batch(out, settings, len(done), fmt, key)
            if batch.has_open_file() and batch.bytes + batch.open_file_bytes() + size > (
                max_batch_bytes
            ):
                batch.close_file()
                done.append(batch.finish())
                batch = _Batch(out, settings, len(done), fmt, key)
            batch.add(record, data)
        if batch is not None:
            done.append(batch.finish())
            batch = None
    finally:
        if batch is not None:  # an exception: leave nothing half-written behind
            shutil.rmtree(batch.tmp, ignore_errors=True)
    return done


def validate_batch(batch_dir: str | Path, *, check_records: bool = True) -> list[str]:
    """Problems found when re-checking a batch folder against its manifest ([] = valid).

    Checks file presence, byte counts, sha256, record counts, no stray files, and (with
    ``check_records``) every record against the record schema and the code-level rules.
    """
    bdir = Path(batch_dir)
    problems: list[str] = []
    try:
        manifest = json.loads((bdir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return [f"{MANIFEST}: unreadable ({err})"]
    expected = {MANIFEST} | {f["name"] for f in manifest.get("files", [])}
    if "rejects" in manifest:
        expected.add(manifest["rejects"]["name"])
    if bdir.name.startswith(BATCH_PREFIX) and bdir.name != BATCH_PREFIX + manifest.get("batchId"):
        problems.append(f"folder name {bdir.name} does not match batchId {manifest.get('batchId')}")
    for p in sorted(bdir.iterdir()):
        # the uploader keeps its resumable state (and its temp files) next to the manifest
        if p.name not in expected and p.name != UPLOAD_STATE and not p.name.startswith("."):
            problems.append(f"{p.name}: not listed in the manifest")
    entries = list(manifest.get("files", []))
    if "rejects" in manifest:
        entries.append(manifest["rejects"])
    for entry in entries:
        path = bdir / entry["name"]
        if not path.is_file():
            problems.append(f"{entry['name']}: missing")
            continue
        size = path.stat().st_size
        if size != entry["bytes"]:
            problems.append(f"{entry['name']}: {size} bytes, manifest says {entry['bytes']}")
        elif _sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['name']}: sha256 does not match the manifest")
    if sum(f["records"] for f in manifest.get("files", [])) != manifest.get("recordCount"):
        problems.append("recordCount differs from the sum of the files' records")
    if sum(f["bytes"] for f in manifest.get("files", [])) != manifest.get("totalBytes"):
        problems.append("totalBytes differs from the sum of the files' bytes")
    if problems or not check_records:
        return problems
    validator = RecordValidator(manifest["tenantId"], manifest["limits"]["maxRecordBytes"])
    counts: dict[str, int] = {}
    for name, record in read_batch_records(bdir, manifest):
        counts[name] = counts.get(name, 0) + 1
        reasons, _ = validator.check(record)
        if reasons:
            problems.append(f"{name} record {counts[name]}: {'; '.join(reasons)}")
            if len(problems) >= 100:
                problems.append("... (stopped after 100 problems)")
                return problems
    for f in manifest["files"]:
        if counts.get(f["name"], 0) != f["records"]:
            problems.append(
                f"{f['name']}: {counts.get(f['name'], 0)} records, manifest says {f['records']}"
            )
    return problems
