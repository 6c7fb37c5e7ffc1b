"""`run --if-changed`: skip the dbt build when nothing that can change its result has changed.

A nightly job often runs when no new file arrived. dbt itself always rebuilds every table (and
re-reads every raw record in staging), so a no-change run costs almost as much as a full one.
After each successful build we record a fingerprint next to the warehouse
(``<warehouse>.lastrun.json``) of everything the result depends on:

* the raw files (name, size, modification time) under events/ and profiles/;
* the dbt vars, the target, the PE_* environment and the command (no --select);
* the project's code: every file under models/, macros/, python_models/, seeds/, the dbt
  tests (tests/*.sql, *.yml) and the package's own .py files, plus dbt_project.yml, profiles.yml and selectors.yml;
* the warehouse file and the model registry as they were right after that build.

The next ``run --if-changed`` with the same fingerprint skips dbt and reuses the warehouse.
The same record decides whether DuckDB's incremental staging may just append the new raw
files (``staging_rebuild_reason``) or must re-stage them all.
Never recorded (so never skipped) when the run quarantined events as ``future_timestamp``
against an unpinned ingestion clock: with time passing, they may become valid.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

STATE_SUFFIX = ".lastrun.json"
_CODE_DIRS = ("models", "macros", "python_models", "seeds", "tests")
_CODE_FILES = ("dbt_project.yml", "profiles.yml", "selectors.yml")
# The settings the models built by raw file read: staging (the raw folder and its format) and
# the validation (its checks; macros/ingestion/events_by_file.sql). A var, or its PE_* form
# (ingestion_clock: PE_INGESTION_CLOCK). See staging_rebuild_reason.
STAGING_VARS = (
    "raw_dir",
    "raw_format",
    "min_event_date",
    "ingestion_clock",
    "currency_code",
    "max_event_bytes",
)


def state_path(warehouse: Path) -> Path:
    return warehouse.with_name(warehouse.name + STATE_SUFFIX)


def _stat(path: Path) -> list[Any]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _code_digest(project_dir: Path) -> str:
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    files = [project_dir / name for name in _CODE_FILES if (project_dir / name).is_file()]
    for folder in _CODE_DIRS:
        files += [p for p in (project_dir / folder).rglob("*") if p.is_file()]
    # tests/ also holds pytest files and their fixtures; dbt reads only the singular tests there
    files = [
        p
        for p in files
        if not (p.is_relative_to(project_dir / "tests") and p.suffix not in (".sql", ".yml"))
    ]
    files += list(package.rglob("*.py"))
    for path in sorted(files):
        if "__pycache__" in path.parts:
            continue
        digest.update(str(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _files(raw: Path) -> list[list[Any]]:
    out = []
    for folder in ("events", "profiles"):
        base = raw / folder
        if base.is_dir():
            out += [[str(p.relative_to(raw)), *_stat(p)] for p in sorted(base.iterdir())]
    return out


def fingerprint(
    project_dir: Path,
    raw: Path,
    command: list[str],
    dbt_vars: dict[str, Any],
    artifacts: Path,
) -> dict[str, Any]:
    """Everything a build's result depends on, except the warehouse (checked separately)."""
    registry = artifacts / "registry.jsonl"
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("PE_")}
    env.pop("PE_DUCKDB_MEMORY_LIMIT", None)  # changes speed, not results
    return {
        "command": command,
        "vars": dbt_vars,
        "env": env,
        "raw_files": _files(raw),
        "code": _code_digest(project_dir),
        "registry": _stat(registry) if registry.is_file() else None,
    }


def unchanged_since_last_run(warehouse: Path, current: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded state (with the last run summary) if nothing changed, else None."""
    state = _recorded_state(warehouse)
    if not isinstance(state, dict):
        return None
    return state if state.get("fingerprint") == current else None


def _recorded_state(warehouse: Path) -> dict[str, Any] | str:
    """The last successful build's record, or why there is none to trust (a short reason)."""
    try:
        state = json.loads(state_path(warehouse).read_text())
    except (OSError, json.JSONDecodeError):
        return "no record of a last successful build"
    if not warehouse.is_file() or state.get("warehouse") != _stat(warehouse):
        return "the warehouse changed after the last recorded build"
    return state


def _setting(fingerprint_: dict[str, Any], var: str) -> tuple[Any, Any]:
    """A setting as a build saw it: its dbt var and its PE_* environment variable."""
    env_name = "PE_" + var.upper()
    return (fingerprint_.get("vars") or {}).get(var), (fingerprint_.get("env") or {}).get(env_name)


def staging_rebuild_reason(warehouse: Path, current: dict[str, Any]) -> str | None:
    """Why this build must re-stage every raw file, or None when appending the new ones is
    enough (DuckDB stages incrementally, by file name: macros/config/staging.sql).

    Appending is enough only when the last successful build was recorded, the warehouse is as
    it left it, the project's code and the settings staging and the validation read
    (STAGING_VARS, as vars or PE_* variables) are the same, and every raw event file it read is
    still there with the same size and modification time (new files may have arrived). The
    as-of date and the other settings do not matter to them.
    """
    state = _recorded_state(warehouse)
    if not isinstance(state, dict):
        return state
    previous = state.get("fingerprint") or {}
    if previous.get("code") != current.get("code"):
        return "the project's code changed since the last build"
    for var in STAGING_VARS:
        if _setting(previous, var) != _setting(current, var):
            return f"var {var} changed since the last build"
    now = {name: rest for name, *rest in current.get("raw_files", [])}
    for name, *rest in previous.get("raw_files", []):
        if not name.startswith("events/"):
            continue  # profiles are staged whole by every build
        if name not in now:
            return f"raw file {name} was removed"
        if now[name] != rest:
            return f"raw file {name} changed"
    return None


def record_run(
    warehouse: Path,
    project_dir: Path,
    raw: Path,
    command: list[str],
    dbt_vars: dict[str, Any],
    artifacts: Path,
    summary: dict[str, Any] | None,
) -> bool:
    """Record a successful build's fingerprint; False (and any old record removed) when the
    result may change with time alone (future-dated events and no pinned ingestion clock)."""
    path = state_path(warehouse)
    path.unlink(missing_ok=True)
    reasons = (summary or {}).get("quarantine_reasons", {}) or {}
    if reasons.get("future_timestamp") and not os.environ.get("PE_INGESTION_CLOCK"):
        return False
    state = {
        "fingerprint": fingerprint(project_dir, raw, command, dbt_vars, artifacts),
        "warehouse": _stat(warehouse),
        "summary": summary,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return True


def record_export(warehouse: Path, out: Path, tenant: str, batches: list[Path]) -> None:
    """Add a successful export of this build to the state, so an unchanged rerun can reuse it."""
    path = state_path(warehouse)
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return
    state["export"] = {"out": str(out), "tenant": tenant, "batches": [str(b) for b in batches]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, sort_keys=True) + "\n")
    os.replace(tmp, path)


def previous_export(state: dict[str, Any], out: Path, tenant: str) -> list[Path] | None:
    """The last export's batch folders when they belong to the same build, folder and tenant
    and still pass the batch check (manifest, file checksums and counts); else None."""
    from profile_enrichment.export.batches import validate_batch

    export = state.get("export") or {}
    if export.get("out") != str(out) or export.get("tenant") != tenant or not export["batches"]:
        return None
    batches = [Path(b) for b in export["batches"]]
    for batch in batches:
        if not (batch / "manifest.json").is_file() or validate_batch(batch, check_records=False):
            return None
    return batches
