"""Shared pytest fixtures: the project root, the shared XDM oracle, generated data, real dbt runs.

dbt runs through the real CLI (`profile-enrichment run`) or `dbt` in a subprocess, from the
project root, against DuckDB files in pytest's tmp folders, so tests never touch data/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pytest

PROJECT_DIR = Path(__file__).resolve().parents[1]
SHARED_DIR = PROJECT_DIR.parent / "shared"
BIN_DIR = Path(sys.executable).parent
# dbt's target/ and logs/ for this pytest session only, so two sessions (or a `make run` beside a
# test run) never overwrite each other's manifest and partial-parse files.
_DBT_SCRATCH = Path(tempfile.mkdtemp(prefix="pe-pytest-dbt-"))


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "DBT_PROFILES_DIR": str(PROJECT_DIR),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
        "DBT_TARGET_PATH": str(_DBT_SCRATCH / "target"),
        "DBT_LOG_PATH": str(_DBT_SCRATCH / "logs"),
    }
    for key in [k for k in env if k.startswith("PE_")]:
        env.pop(key)  # tests say explicitly what they want
    env.update(extra or {})
    return env


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 900) -> CliResult:
    """Run `profile-enrichment ARGS` as a user would, from the project root."""
    proc = subprocess.run(
        [str(BIN_DIR / "profile-enrichment"), *args],
        cwd=PROJECT_DIR,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def run_dbt(
    *args: str,
    dbt_vars: dict | None = None,
    env: dict[str, str] | None = None,
    timeout: int = 900,
) -> CliResult:
    """Run `dbt ARGS --vars ...` from the project root (plain dbt, as CI and schedulers do)."""
    command = [str(BIN_DIR / "dbt"), *args]
    if dbt_vars is not None:
        command += ["--vars", json.dumps(dbt_vars)]
    proc = subprocess.run(
        command,
        cwd=PROJECT_DIR,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def copy_project(target: Path) -> Path:
    """The dbt project only: dbt_project.yml, profiles.yml, models/, macros/, seeds/,
    python_models/ and tests/*.sql."""
    target.mkdir(parents=True)
    for name in ["dbt_project.yml", "profiles.yml", "selectors.yml"]:
        if (PROJECT_DIR / name).exists():
            shutil.copy2(PROJECT_DIR / name, target / name)
    for name in ["models", "macros", "seeds", "python_models"]:
        shutil.copytree(
            PROJECT_DIR / name, target / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    (target / "tests").mkdir()
    for sql in (PROJECT_DIR / "tests").glob("*.sql"):
        shutil.copy2(sql, target / "tests" / sql.name)
    return target


def split_off_last_day(
    work: Path, *, customers: int, days: int, seed: int
) -> tuple[Path, Path, date]:
    """Generate data into work/generated; events before the last day go to
    work/raw/events/a.parquet (profiles beside them), the last day's to work/b.parquet, to be
    moved into raw/events/ as "the next night". Returns (raw folder, held-back file, last day)."""
    generated = work / "generated"
    made = run_cli(
        "generate", "--customers", str(customers), "--days", str(days), "--seed", str(seed),
        "--out", str(generated),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    raw = work / "raw"
    (raw / "events").mkdir(parents=True)
    shutil.copytree(generated / "profiles", raw / "profiles")
    later = work / "b.parquet"
    con = duckdb.connect()
    try:
        events = f"read_parquet('{generated}/events/*.parquet')"
        (last_day,) = con.execute(f'select max(cast("timestamp" as date)) from {events}').fetchone()
        split = f"cast(\"timestamp\" as date) < date '{last_day}'"
        con.execute(f"copy (select * from {events} where {split}) to '{raw}/events/a.parquet'")
        con.execute(f"copy (select * from {events} where not ({split})) to '{later}'")
    finally:
        con.close()
    return raw, later, last_day


def query(warehouse: Path, sql: str) -> list[tuple]:
    """Read-only query on a warehouse file (closed right after, so dbt can lock it again)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.sql(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="session")
def project_dir() -> Path:
    return PROJECT_DIR


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.fail(f"../shared is missing next to the repo ({SHARED_DIR}); CI lays it there")
    return SHARED_DIR


@pytest.fixture(scope="session")
def small_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated data set (Parquet), shared by the end-to-end tests."""
    out = tmp_path_factory.mktemp("raw_small")
    result = run_cli(
        "generate", "--customers", "600", "--days", "540", "--seed", "3", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def built_warehouse(small_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole pipeline built once on small_raw (dev target, a tmp DuckDB file)."""
    work = tmp_path_factory.mktemp("built")
    warehouse = work / "warehouse.duckdb"
    result = run_cli(
        "run",
        "--raw",
        str(small_raw),
        "--warehouse",
        str(warehouse),
        "--artifacts",
        str(work / "artifacts"),
        "--quiet",
        env={"PE_EXPORT_DIR": str(work / "exports")},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return warehouse


@pytest.fixture(scope="session")
def engine_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The engine tests' input: generated JSON Lines plus a file of malformed records
    (engine_compare.BAD_LINES) that every engine must quarantine the same way."""
    from engine_compare import BAD_LINES

    out = tmp_path_factory.mktemp("engines") / "raw"
    result = run_cli(
        "generate", "--customers", "300", "--days", "400", "--seed", "5",
        "--format", "jsonl", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (out / "events" / "zz-malformed.jsonl").write_text("\n".join(BAD_LINES) + "\n")
    return out


@pytest.fixture(scope="session")
def duckdb_warehouse(engine_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """engine_raw built on DuckDB: what the other engines are compared with. Its registry
    (artifacts/ beside it) holds the champions that PostgreSQL scores with, compiled to SQL."""
    folder = tmp_path_factory.mktemp("engines-duckdb")
    warehouse = folder / "warehouse.duckdb"
    result = run_cli(
        "run", "--raw", str(engine_raw), "--warehouse", str(warehouse),
        "--artifacts", str(folder / "artifacts"), "--no-export", "--no-report", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return warehouse
