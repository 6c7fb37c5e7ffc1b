"""Running dbt for the user: project discovery, settings as vars, lock detection, summaries.

dbt runs in a subprocess, from the project root (profile paths resolve against the working
directory), so the DuckDB file is released the moment dbt exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from profile_enrichment.errors import UserError
from profile_enrichment.progress import DbtProgress, interactive

SUMMARY_MARKER = "PE_RUN_SUMMARY "
_LOCK_PATTERNS = ("Could not set lock on file", "Conflicting lock is held")


def find_project_dir(start: Path | None = None) -> Path:
    """The dbt project root: $PE_PROJECT_DIR, else the nearest parent with dbt_project.yml."""
    env = os.environ.get("PE_PROJECT_DIR")
    candidates = [Path(env)] if env else []
    here = (start or Path.cwd()).resolve()
    candidates += [here, *here.parents]
    candidates.append(Path(__file__).resolve().parents[2])  # editable install: the repo root
    for candidate in candidates:
        if (candidate / "dbt_project.yml").is_file():
            return candidate
    raise UserError(
        "no dbt project found (dbt_project.yml)",
        hint="run from the project folder or set PE_PROJECT_DIR",
    )


def dbt_executable() -> str:
    """The dbt next to this Python (the project's venv), else the one on PATH."""
    local = Path(sys.executable).with_name("dbt")
    return str(local) if local.exists() else "dbt"


def parse_as_of(value: str | None) -> str | None:
    """Validate an as-of date given on the command line (YYYY-MM-DD, a real date)."""
    if value is None or value == "":
        return None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise UserError(f"--as-of must be a date as YYYY-MM-DD, got {value[:40]!r}")
    try:
        date.fromisoformat(value)
    except ValueError as err:
        raise UserError(f"--as-of is not a real date: {value}") from err
    return value


@dataclass
class RawInput:
    """What a raw folder holds: the event format and whether profiles are present."""

    root: Path
    format: str
    event_files: list[Path]
    has_profiles: bool


def inspect_raw_dir(raw: Path) -> RawInput:
    """Check a raw folder before dbt reads it, so mistakes get one clear line."""
    if not raw.exists():
        raise UserError(f"raw folder not found: {raw}", hint="generate data or pass --raw DIR")
    events_dir = raw / "events"
    if not events_dir.is_dir():
        raise UserError(
            f"{raw} has no events/ folder",
            hint="put XDM ExperienceEvent files (Parquet or JSON Lines) in DIR/events/",
        )
    parquet = sorted(events_dir.glob("*.parquet"))
    jsonl = sorted(p for p in events_dir.glob("*.json*") if p.suffix in (".json", ".jsonl"))
    if parquet and jsonl:
        raise UserError(
            f"{events_dir} mixes Parquet and JSON Lines files",
            hint="keep one format per folder (AEP exports one format per dataset)",
        )
    if not parquet and not jsonl:
        raise UserError(
            f"{events_dir} holds no event files (*.parquet, *.json, *.jsonl)",
            hint="point --raw at a folder written by `generate`, `import-transactions` or an AEP export",
        )
    fmt = "parquet" if parquet else "jsonl"
    profiles_dir = raw / "profiles"
    pattern = "*.parquet" if fmt == "parquet" else "*.json*"
    has_profiles = profiles_dir.is_dir() and any(profiles_dir.glob(pattern))
    _check_parquet_files(parquet)
    _check_utf8_files(jsonl)
    return RawInput(raw, fmt, parquet or jsonl, has_profiles)


def _check_utf8_files(files: list[Path], chunk_bytes: int = 64 << 20) -> None:
    """JSON Lines must be UTF-8; DuckDB would fail the whole read on one bad byte, so name the
    file and line instead (nothing is loaded, nothing is lost)."""
    import codecs

    for path in files:
        decoder = codecs.getincrementaldecoder("utf-8")()
        lines_before = 0
        with path.open("rb") as handle:
            while chunk := handle.read(chunk_bytes):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as err:
                    line = lines_before + chunk[: err.start].count(b"\n") + 1
                    raise UserError(
                        f"{path} line {line} is not valid UTF-8",
                        hint="re-export the file as UTF-8 or remove that line; nothing was loaded",
                    ) from err
                lines_before += chunk.count(b"\n")
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as err:
                raise UserError(
                    f"{path} ends inside a multi-byte character (line {lines_before + 1})",
                    hint="the file looks truncated; re-export it",
                ) from err


def _check_parquet_files(files: list[Path]) -> None:
    """A truncated or non-Parquet file would fail the whole read: name it instead."""
    import pyarrow.parquet as pq

    for path in files:
        try:
            pq.read_metadata(path)
        except Exception as err:  # pyarrow raises several types for corrupt files
            raise UserError(
                f"{path} is not a readable Parquet file ({type(err).__name__})",
                hint="re-export or remove the file; nothing was loaded",
            ) from err


# Run locks this process holds, by warehouse path: kept open until the process exits, so the
# kernel releases them even when the process is killed (flock dies with its file description).
_RUN_LOCKS: dict[Path, int] = {}


def check_warehouse_free(path: Path) -> None:
    """Claim the warehouse for this process's run, or fail fast with a clear message.

    Two guards. First an exclusive, non-blocking ``flock`` on ``<warehouse>.lock``, held until
    this process exits: a second ``profile-enrichment run`` fails at once, even in the gaps
    between dbt's connections (parsing, the export) when DuckDB itself holds no lock. Then a
    probe of the DuckDB file, for any other program (a notebook, a plain ``dbt build``).
    """
    import duckdb

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot create the warehouse folder {path.parent}: {err.strerror}"
        ) from err
    claim_run_lock(path)
    try:
        duckdb.connect(str(path)).close()
    except duckdb.IOException as err:
        if any(p in str(err) for p in _LOCK_PATTERNS):
            raise UserError(
                f"another run holds the warehouse {path}",
                hint="wait for it to finish, or close the program that has the file open",
            ) from err
        raise UserError(f"cannot open the warehouse {path}: {err}") from err


def claim_run_lock(path: Path) -> None:
    import fcntl

    key = path.resolve()
    if key in _RUN_LOCKS:
        return
    lock_path = key.with_name(key.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise UserError(f"cannot create the run lock {lock_path}: {err.strerror}") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        os.close(fd)
        raise UserError(
            f"another run holds the warehouse {path}",
            hint="wait for it to finish; the lock goes when that process ends",
        ) from err
    os.set_inheritable(fd, False)
    _RUN_LOCKS[key] = fd


@dataclass
class DbtResult:
    """The outcome of one dbt invocation."""

    returncode: int
    failures: list[str] = field(default_factory=list)
    summary: dict | None = None
    locked: bool = False


def run_dbt(
    project_dir: Path,
    command: list[str],
    dbt_vars: dict,
    env: dict[str, str],
    quiet: bool = False,
    runner: list[str] | None = None,
) -> DbtResult:
    """Run `dbt <command>` in the project root and collect failures and the run summary.
    ``runner`` replaces the `dbt` executable (the spark target: engines/local_spark.py)."""
    args = [
        *(runner or [dbt_executable()]),
        *command,
        "--vars",
        json.dumps(dbt_vars, sort_keys=True),
    ]
    full_env = {
        **os.environ,
        "DBT_PROFILES_DIR": str(project_dir),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
        **env,
    }
    proc = subprocess.Popen(
        args,
        cwd=project_dir,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    summary = None
    locked = False
    assert proc.stdout is not None
    # On a terminal, dbt's hundreds of lines become one progress bar (problems still print);
    # piped or captured output stays dbt's own, line for line.
    bar = DbtProgress() if not quiet and interactive() else None
    with bar if bar is not None else contextlib.nullcontext():
        for line in proc.stdout:
            if SUMMARY_MARKER in line:
                payload = line.split(SUMMARY_MARKER, 1)[1].strip()
                try:
                    summary = json.loads(payload)
                except json.JSONDecodeError:
                    summary = None
                continue
            if any(p in line for p in _LOCK_PATTERNS):
                locked = True
            if bar is not None:
                bar.feed(line)
            elif not quiet:
                sys.stdout.write(line)
        returncode = proc.wait()
    return DbtResult(returncode, _failures(project_dir), summary, locked)


def _failures(project_dir: Path) -> list[str]:
    target_dir = Path(os.environ.get("DBT_TARGET_PATH", "target"))
    results = (
        target_dir if target_dir.is_absolute() else project_dir / target_dir
    ) / "run_results.json"
    if not results.exists():
        return []
    try:
        data = json.loads(results.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    failed = []
    for result in data.get("results", []):
        if result.get("status") in ("error", "fail", "runtime error"):
            lines = [ln.strip() for ln in (result.get("message") or "").splitlines() if ln.strip()]
            failed.append(f"{result.get('unique_id')}: {failure_detail(lines)}".strip())
    return failed


_ERROR_LINE = re.compile(r"(Error|Exception):")


def failure_detail(lines: list[str]) -> str:
    """The line of a failed node's message that says what went wrong: the last one naming an
    error ("ValueError: ...", DuckDB's "Out of Memory Error: ...", "IO Error: ..."), since a
    Python model's message is a traceback and DuckDB's end with advice and a link; else the
    last line."""
    for line in reversed(lines):
        if _ERROR_LINE.search(line):
            return line
    return lines[-1] if lines else ""
