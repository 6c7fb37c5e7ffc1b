"""A file-based model registry: ``registry.jsonl`` plus content-addressed artifacts.

The registry lives in an artifacts directory, not in the warehouse, so it survives a rebuild
of the DuckDB file. Layout under ``root``::

    registry.jsonl                                  one JSON object per model version
    <model_name>/<model_version>/<artifact file>    e.g. segments/3f9a0c1d2e4b5a69/model.json

Guarantees:

* **Deterministic.** Versions are content hashes of (training data fingerprint, params, code
  version). The registry file is rewritten in a canonical form (sorted rows, sorted keys), and
  nothing reads the wall clock: ``registered_at`` is recorded only when the caller passes it.
* **Idempotent.** Registering the same ``(model_name, model_version)`` again replaces its row.
* **One champion per model.** Registering a champion retires the previous champion (its row
  stays, with ``status='retired'`` and ``superseded_by``). Rejected entries never touch the
  champion. Re-registering an older version as champion is a rollback.
* **Atomic.** Every file is written to a temporary file in the same directory, fsynced and
  moved into place with ``os.replace``; a crash leaves the old file intact. Writers are
  serialized by a lock (a thread lock plus ``fcntl.flock`` where available), since dbt runs
  Python models in threads.
* **Only our own artifacts are loaded.** ``load_artifact_bytes`` takes the path and SHA-256 from
  the registry row, refuses paths that leave ``root`` (``..``, absolute, symlinks), and refuses
  bytes whose hash does not match.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from profile_enrichment.errors import UserError
from profile_enrichment.fsutil import atomic_write_bytes

try:  # POSIX only; on other platforms the in-process lock still serializes dbt threads.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

REGISTRY_FILE = "registry.jsonl"
LOCK_FILE = ".registry.lock"
STATUSES = ("champion", "rejected", "retired")
REGISTRABLE_STATUSES = ("champion", "rejected")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


class RegistryError(UserError):
    """The registry or an artifact is unusable (corrupt line, bad entry, unsafe path)."""


class ArtifactIntegrityError(RegistryError):
    """An artifact is missing, outside the registry root, or does not match its SHA-256."""


# --------------------------------------------------------------------------------------------
# Canonical JSON and hashing
# --------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars -> Python, tuples -> lists, NaN/inf -> None, Path -> str."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (Path, date)):
        return value.isoformat() if isinstance(value, date) else value.as_posix()
    if value is None or isinstance(value, (str, int, bool)):
        return value
    raise TypeError(f"not JSON-serializable: {type(value).__name__} {value!r}")


def canonical_json(value: Any, *, indent: int | None = None) -> str:
    """Deterministic JSON: sorted keys, no NaN (non-finite floats become null)."""
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(
        _plain(value),
        sort_keys=True,
        separators=separators,
        ensure_ascii=False,
        allow_nan=False,
        indent=indent,
    )


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def model_version(
    training_data_fingerprint: str, params: Mapping[str, Any], code_version: str
) -> str:
    """Content-derived version: first 16 hex chars of SHA-256 over the canonical JSON of the
    inputs. Same data, params and code => same version, so re-running is idempotent.

    Params are hashed as JSON, so ``1`` and ``1.0`` differ: pass them in a stable form.
    """
    payload = canonical_json(
        {
            "code_version": code_version,
            "params": dict(params),
            "training_data_fingerprint": training_data_fingerprint,
        }
    )
    return sha256_bytes(payload.encode("utf-8"))[:16]


def _hash_column(series: pd.Series) -> np.ndarray:
    try:
        hashed = pd.util.hash_pandas_object(series, index=False, categorize=True)
    except TypeError:  # unhashable cells (lists, dicts): hash their canonical JSON
        as_text = series.map(lambda v: json.dumps(_plain(v), sort_keys=True, default=str))
        hashed = pd.util.hash_pandas_object(as_text, index=False, categorize=True)
    return hashed.to_numpy(dtype=np.uint64)


_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it is a bijection mod 2**64


def _row_order(matrix: np.ndarray) -> np.ndarray:
    """The order of the rows of a uint64 matrix that depends only on their content: by a mix
    of each row's cells, then, among rows with the same mix, lexicographically by the cells
    (equal rows are interchangeable, so their relative order does not change the bytes)."""
    key = np.zeros(len(matrix), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in matrix.T:
            key = (key ^ column) * _MIX
            key ^= key >> np.uint64(29)
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    change = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [len(ordered)]))
    for begin, end in zip(starts[ends - starts > 1], ends[ends - starts > 1], strict=True):
        block = order[begin:end]  # equal rows, or a 64-bit collision
        order[begin:end] = block[np.lexsort(matrix[block].T[::-1])]
    return order


def fingerprint_frame(df: pd.DataFrame) -> str:
    """Deterministic SHA-256 (hex) of a DataFrame's content: schema plus rows.

    Independent of row order and column order, without needing a key: each cell is hashed
    with ``pandas.util.hash_pandas_object`` (vectorized, ~1 s per million rows x 20 columns),
    the per-row hash tuples are sorted, and the sorted matrix is fed to SHA-256 together with
    the sorted (column name, dtype) list and the row count. Sorting the hashes rather than the
    rows by "key columns" also stays deterministic when the key is not unique. Duplicated rows
    count (it is a multiset). The rows are sorted by one 64-bit mix of their cell hashes, and
    only rows that tie on it by all their cell hashes (a lexicographic sort of 85 columns took
    2 s of the 24 s churn model at 147k training rows). Stable within one pandas version (pinned in requirements.lock);
    include the environment in ``code_version`` if that matters. The index is ignored.
    """
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        raise ValueError("fingerprint_frame: duplicate column names")
    order = sorted(range(len(names)), key=lambda j: names[j])
    header = canonical_json(
        {
            "columns": [[names[j], str(df.dtypes.iloc[j])] for j in order],
            "n_rows": len(df),
        }
    )
    digest = hashlib.sha256(header.encode("utf-8"))
    if len(df) and names:
        matrix = np.empty((len(df), len(order)), dtype=np.uint64)
        for out_j, j in enumerate(order):
            matrix[:, out_j] = _hash_column(df.iloc[:, j])
        digest.update(np.ascontiguousarray(matrix[_row_order(matrix)]).tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Entries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RegistryEntry:
    """One model version. ``artifact_path`` is POSIX and relative to the registry root."""

    model_name: str
    model_version: str
    as_of_date: str
    training_window_start: str | None = None
    training_window_end: str | None = None
    n_train: int = 0
    n_valid: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)
    status: str
    reason: str = ""
    artifact_path: str | None = None
    artifact_sha256: str | None = None
    superseded_by: str | None = None
    registered_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict (non-finite metric values become ``None``)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegistryEntry:
        """Build and validate an entry; raises ``RegistryError`` on unknown/missing/bad fields."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RegistryError(f"unknown registry fields: {', '.join(unknown)}")
        try:
            entry = cls(**dict(data))
        except TypeError as exc:
            raise RegistryError(f"bad registry entry: {exc}") from exc
        entry.validate()
        return entry

    def validate(self) -> None:
        """Raise ``RegistryError`` naming the first invalid field."""
        for name in ("model_name", "model_version"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _SAFE_NAME.match(value):
                raise RegistryError(
                    f"{name} {value!r} is not a safe name",
                    hint="use letters, digits, '.', '_' or '-', not starting with '.'",
                )
        _check_iso("as_of_date", self.as_of_date, required=True)
        _check_iso("training_window_start", self.training_window_start, required=False)
        _check_iso("training_window_end", self.training_window_end, required=False)
        if self.status not in STATUSES:
            raise RegistryError(f"status {self.status!r} is not one of {', '.join(STATUSES)}")
        for name in ("n_train", "n_valid"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise RegistryError(f"{name} must be a non-negative integer, got {value!r}")
        for name in ("params", "metrics"):
            if not isinstance(getattr(self, name), dict):
                raise RegistryError(f"{name} must be a dict")
        if not isinstance(self.features, list) or not all(
            isinstance(f, str) for f in self.features
        ):
            raise RegistryError("features must be a list of column names")
        if not isinstance(self.reason, str):
            raise RegistryError("reason must be a string")
        if (self.artifact_path is None) != (self.artifact_sha256 is None):
            raise RegistryError("artifact_path and artifact_sha256 go together")
        if self.artifact_sha256 is not None and not _SHA256.match(str(self.artifact_sha256)):
            raise RegistryError(f"artifact_sha256 {self.artifact_sha256!r} is not a SHA-256 hex")
        if self.artifact_path is not None:
            _check_relative(self.artifact_path)


def _check_iso(name: str, value: Any, *, required: bool) -> None:
    if value is None and not required:
        return
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            date.fromisoformat(value)
            return
        with contextlib.suppress(ValueError):
            datetime.fromisoformat(value)
            return
    raise RegistryError(f"{name} must be an ISO date string (YYYY-MM-DD), got {value!r}")


def _check_relative(rel: str) -> PurePosixPath:
    """Reject absolute paths, backslashes, ``..`` and empty components."""
    if not isinstance(rel, str) or not rel or "\\" in rel or rel.startswith("/") or ":" in rel:
        raise ArtifactIntegrityError(f"artifact path {rel!r} is not a relative POSIX path")
    path = PurePosixPath(rel)
    if path.is_absolute() or any(part in ("", ".", "..") for part in rel.split("/")):
        raise ArtifactIntegrityError(f"artifact path {rel!r} must stay inside the registry root")
    return path


# --------------------------------------------------------------------------------------------
# File helpers
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


class ModelRegistry:
    """Model versions in ``root/registry.jsonl``, artifacts under ``root/<model>/<version>/``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.path = self.root / REGISTRY_FILE

    # -- reading ---------------------------------------------------------------------------

    def _read(self) -> list[RegistryEntry]:
        if not self.path.exists():
            return []
        try:
            text = self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise RegistryError(f"{self.path}: not UTF-8 text ({exc.reason})") from exc
        entries: list[RegistryEntry] = []
        seen: dict[tuple[str, str], int] = {}
        champions: dict[str, int] = {}
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{self.path}, line {lineno}"
            hint = "restore registry.jsonl from a backup, or fix or delete that line"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RegistryError(f"{where}: invalid JSON ({exc.msg})", hint=hint) from exc
            if not isinstance(data, dict):
                raise RegistryError(f"{where}: expected a JSON object", hint=hint)
            try:
                entry = RegistryEntry.from_dict(data)
            except RegistryError as exc:
                raise RegistryError(f"{where}: {exc.message}", hint=hint) from exc
            key = (entry.model_name, entry.model_version)
            if key in seen:
                raise RegistryError(
                    f"{where}: duplicate entry for {key[0]} {key[1]} (first on line {seen[key]})",
                    hint=hint,
                )
            seen[key] = lineno
            if entry.status == "champion":
                if entry.model_name in champions:
                    raise RegistryError(
                        f"{where}: second champion for {entry.model_name} "
                        f"(first on line {champions[entry.model_name]})",
                        hint=hint,
                    )
                champions[entry.model_name] = lineno
            entries.append(entry)
        return entries

    def entries(self, model_name: str | None = None) -> list[RegistryEntry]:
        """All entries (or one model's), sorted by (model_name, as_of_date, model_version)."""
        rows = [e for e in self._read() if model_name is None or e.model_name == model_name]
        return sorted(rows, key=_sort_key)

    def get(self, model_name: str, model_version: str) -> RegistryEntry | None:
        """The entry for one version, or None."""
        for entry in self._read():
            if entry.model_name == model_name and entry.model_version == model_version:
                return entry
        return None

    def champion(self, model_name: str) -> RegistryEntry | None:
        """The current champion of ``model_name``, or None."""
        for entry in self._read():
            if entry.model_name == model_name and entry.status == "champion":
                return entry
        return None

    def to_frame(self) -> pd.DataFrame:
        """Entries as a flat table (params/metrics/features as canonical JSON strings), for a
        dbt model over the registry."""
        columns = [f.name for f in dataclasses.fields(RegistryEntry)]
        rows = []
        for entry in self.entries():
            row = entry.to_dict()
            for name in ("params", "metrics", "features"):
                row[name] = canonical_json(row[name])
            rows.append(row)
        frame = pd.DataFrame(rows, columns=columns)
        return frame.astype({"n_train": "int64", "n_valid": "int64"})

    # -- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        key = str(self.root.resolve())
        with _THREAD_LOCKS_GUARD:
            thread_lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
        with thread_lock:
            if fcntl is None:  # pragma: no cover
                yield
                return
            with open(self.root / LOCK_FILE, "a+b") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _write(self, entries: list[RegistryEntry]) -> None:
        lines = [canonical_json(e.to_dict()) for e in sorted(entries, key=_sort_key)]
        atomic_write_bytes(self.path, ("\n".join(lines) + "\n" if lines else "").encode("utf-8"))

    def register(self, entry: RegistryEntry) -> RegistryEntry:
        """Add or replace ``(model_name, model_version)``; returns the entry as stored.

        Status must be 'champion' or 'rejected'. A new champion retires the model's previous
        champion. If the entry names an artifact, it must exist inside root and match its
        SHA-256 (so the registry never points at the wrong bytes).
        """
        stored = RegistryEntry.from_dict(entry.to_dict())  # validates, normalizes numpy/NaN
        if stored.status not in REGISTRABLE_STATUSES:
            raise RegistryError(
                f"cannot register {stored.model_name} {stored.model_version} with status "
                f"{stored.status!r}; use one of {', '.join(REGISTRABLE_STATUSES)}"
            )
        if stored.artifact_path is not None:
            self._verified_bytes(stored)
        key = (stored.model_name, stored.model_version)
        with self._lock():
            rows = [e for e in self._read() if (e.model_name, e.model_version) != key]
            if stored.status == "champion":
                rows = [
                    dataclasses.replace(e, status="retired", superseded_by=stored.model_version)
                    if e.model_name == stored.model_name and e.status == "champion"
                    else e
                    for e in rows
                ]
            rows.append(stored)
            self._write(rows)
        return stored

    # -- artifacts -------------------------------------------------------------------------

    def save_artifact(
        self,
        model_name: str,
        model_version: str,
        obj: bytes | Mapping[str, Any] | list[Any],
        filename: str | None = None,
    ) -> tuple[str, str]:
        """Write an artifact atomically; returns ``(path relative to root, sha256)``.

        ``bytes`` are stored as-is (default name ``model.bin``); a dict/list is stored as
        canonical, indented JSON (default ``model.json``), so equal objects give equal hashes.
        """
        if isinstance(obj, (bytes, bytearray, memoryview)):
            data = bytes(obj)
            filename = filename or "model.bin"
        elif isinstance(obj, (Mapping, list)):
            data = (canonical_json(obj, indent=2) + "\n").encode("utf-8")
            filename = filename or "model.json"
        else:
            raise TypeError(f"artifact must be bytes or a JSON dict/list, not {type(obj).__name__}")
        for label, part in (
            ("model_name", model_name),
            ("model_version", model_version),
            ("filename", filename),
        ):
            if not _SAFE_NAME.match(part):
                raise RegistryError(f"{label} {part!r} is not a safe path component")
        rel = f"{model_name}/{model_version}/{filename}"
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(self.root.resolve()):
            raise ArtifactIntegrityError(f"artifact directory for {rel!r} escapes {self.root}")
        atomic_write_bytes(target, data)
        return rel, sha256_bytes(data)

    def _resolve_artifact(self, rel: str) -> Path:
        _check_relative(rel)
        root = self.root.resolve()
        try:
            resolved = (self.root / rel).resolve(strict=True)
        except (FileNotFoundError, RuntimeError) as exc:
            raise ArtifactIntegrityError(f"artifact {rel!r} not found under {self.root}") from exc
        if not resolved.is_relative_to(root):
            raise ArtifactIntegrityError(f"artifact {rel!r} resolves outside {self.root}")
        if not resolved.is_file():
            raise ArtifactIntegrityError(f"artifact {rel!r} is not a regular file")
        return resolved

    def _verified_bytes(self, entry: RegistryEntry) -> bytes:
        if entry.artifact_path is None or entry.artifact_sha256 is None:
            raise ArtifactIntegrityError(
                f"{entry.model_name} {entry.model_version} has no artifact"
            )
        data = self._resolve_artifact(entry.artifact_path).read_bytes()
        actual = sha256_bytes(data)
        if actual != entry.artifact_sha256:
            raise ArtifactIntegrityError(
                f"artifact {entry.artifact_path!r} has SHA-256 {actual[:12]}..., the registry "
                f"says {entry.artifact_sha256[:12]}...; refusing to load a modified artifact",
                hint="retrain to regenerate it, or restore the original file",
            )
        return data

    def load_artifact_bytes(self, entry: RegistryEntry) -> bytes:
        """The artifact's bytes, after checking the entry against the registry row, the path
        against the root and the content against the registered SHA-256."""
        registered = self.get(entry.model_name, entry.model_version)
        if registered is None:
            raise ArtifactIntegrityError(
                f"{entry.model_name} {entry.model_version} is not in {self.path}"
            )
        if (registered.artifact_path, registered.artifact_sha256) != (
            entry.artifact_path,
            entry.artifact_sha256,
        ):
            raise ArtifactIntegrityError(
                f"{entry.model_name} {entry.model_version}: artifact path/hash differ from the "
                "registry; only registered artifacts are loaded"
            )
        return self._verified_bytes(registered)

    def load_artifact_json(self, entry: RegistryEntry) -> Any:
        """:meth:`load_artifact_bytes`, parsed as JSON."""
        return json.loads(self.load_artifact_bytes(entry).decode("utf-8"))


def _sort_key(entry: RegistryEntry) -> tuple[str, str, str]:
    return (entry.model_name, entry.as_of_date, entry.model_version)


__all__ = [
    "ArtifactIntegrityError",
    "ModelRegistry",
    "RegistryEntry",
    "RegistryError",
    "atomic_write_bytes",
    "canonical_json",
    "fingerprint_frame",
    "model_version",
    "sha256_bytes",
]
