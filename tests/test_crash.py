"""Crash safety: `profile-enrichment run` and `export` killed with SIGKILL at random points.

A nightly job can die at any instruction (OOM killer, a rebooted host). After each kill:
- the warehouse opens (DuckDB replays or discards its write-ahead log);
- no partial or corrupt batch is visible in the export folder, and the registry parses;
- a plain rerun completes, and ends exactly where an uninterrupted run ends: every warehouse
  table bit for bit, the export files byte for byte, the model artifacts byte for byte.

The kill times are drawn (seeded, so a failure can be replayed) from every tenth of the time an
uninterrupted run took on this machine, so they fall into parsing, seeds, staging, the
incremental rollups, the snapshots, the Python models, the tests and the export; the export
alone gets its own kills. Every kill hits the whole process group (the CLI and its dbt).

Slow (a rerun per kill): `make test-slow` runs it, and `.ci/run` runs that after `make test`.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import psutil
import pytest

from conftest import BIN_DIR, _env, run_cli
from outputs import assert_batches_complete, table_hashes, tree_digest

pytestmark = [pytest.mark.slow, pytest.mark.dbt]

SEED = 20261128
BUILD_KILLS = 8
EXPORT_KILLS = 5


def _start(command: list[str], work: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN_DIR / "profile-enrichment"), *command],
        env=_env(
            {
                "PE_EXPORT_DIR": str(work / "exports"),
                "PE_REPORT_DIR": str(work / "reports"),
                "DBT_TARGET_PATH": str(work / "target"),
                "DBT_LOG_PATH": str(work / "logs"),
            }
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the kill reaches dbt too
    )


def _run_command(raw: Path, work: Path) -> list[str]:
    return [
        "run",
        "--raw",
        str(raw),
        "--warehouse",
        str(work / "warehouse.duckdb"),
        "--artifacts",
        str(work / "artifacts"),
    ]


def _kill_after(proc: subprocess.Popen, delay: float) -> tuple[bool, str]:
    """SIGKILL the process group after `delay` s; (was it killed, the last line it printed)."""
    try:
        proc.wait(timeout=delay)
        killed = False
    except subprocess.TimeoutExpired:
        KILLED.update(_group_members(proc.pid))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = True
    output = proc.stdout.read() if proc.stdout else ""
    lines = [line for line in output.splitlines() if line.strip()]
    return killed, (lines[-1][:120] if lines else "<nothing printed yet>")


def _group_members(group: int) -> set[int]:
    members = set()
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == group:
                members.add(process.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


def _finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-4000:]
    return output


# The incremental rollup's bookkeeping: the first day the LAST run rewrote (null on a first
# build). A rerun records its own window, so it is the one table that may differ.
BOOKKEEPING = {"int_identity_daily_activity_watermark"}


def _tables(warehouse: Path) -> dict[str, tuple[int, int]]:
    return {k: v for k, v in table_hashes(warehouse).items() if k not in BOOKKEEPING}


def _artifacts(folder: Path) -> dict[str, str]:
    """Artifact files; a temp file of an atomic write cut short is hidden and never read."""
    return {
        name: digest
        for name, digest in tree_digest(folder).items()
        if not Path(name).name.startswith(".")
    }


# Every process a test killed. SIGKILL takes effect when a process leaves the kernel: one in
# the middle of a disk write under load holds its DuckDB lock a moment longer.
KILLED: set[int] = set()


def _open_after_the_kill(warehouse: Path) -> duckdb.DuckDBPyConnection:
    """Open read-write (replaying the WAL, as a rerun does) once the killed processes are
    gone; a lock held by any other process is a failure."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return duckdb.connect(str(warehouse))
        except duckdb.IOException as err:
            holder = re.search(r"PID (\d+)", str(err))
            if not holder or int(holder.group(1)) not in KILLED or time.monotonic() > deadline:
                raise AssertionError(f"the warehouse does not open: {err}") from err
            time.sleep(0.1)


def _assert_consistent(work: Path) -> None:
    warehouse = work / "warehouse.duckdb"
    if warehouse.exists():
        con = _open_after_the_kill(warehouse)
        try:
            con.sql("select count(*) from information_schema.tables").fetchall()
        finally:
            con.close()
    assert_batches_complete(work / "exports")
    registry = work / "artifacts" / "registry.jsonl"
    if registry.exists():
        for line in registry.read_text().splitlines():
            json.loads(line)


@pytest.fixture(scope="module")
def crash_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("crash_raw")
    result = run_cli(
        "generate", "--customers", "400", "--days", "450", "--seed", "9", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def reference(crash_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One uninterrupted run, and how long it and a bare export take here."""
    work = tmp_path_factory.mktemp("reference")
    started = time.monotonic()
    _finish(_start(_run_command(crash_raw, work), work))
    run_seconds = time.monotonic() - started
    again = tmp_path_factory.mktemp("reference_export")
    started = time.monotonic()
    _finish(
        _start(
            ["export", "--warehouse", str(work / "warehouse.duckdb"), "--out", str(again)],
            again,
        )
    )
    export_seconds = time.monotonic() - started
    assert tree_digest(again) == tree_digest(work / "exports")
    return {
        "work": work,
        "run_seconds": run_seconds,
        "export_seconds": export_seconds,
        "tables": _tables(work / "warehouse.duckdb"),
        "exports": tree_digest(work / "exports"),
        "artifacts": _artifacts(work / "artifacts"),
    }


def _delays(total: float, count: int, rng: random.Random, low: float, high: float) -> list[float]:
    """One random point in each of `count` equal slices of [low, high] x total."""
    width = (high - low) / count
    return [total * (low + width * (i + rng.random())) for i in range(count)]


def test_a_run_killed_anywhere_reruns_to_the_uninterrupted_result(
    crash_raw: Path, reference: dict, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    delays = _delays(reference["run_seconds"], BUILD_KILLS, rng, 0.03, 1.0)
    log = []
    for delay in delays:
        killed, last_line = _kill_after(_start(_run_command(crash_raw, tmp_path), tmp_path), delay)
        log.append(f"{delay:6.1f}s killed={killed} last: {last_line}")
        _assert_consistent(tmp_path)
        _finish(_start(_run_command(crash_raw, tmp_path), tmp_path))
        assert _tables(tmp_path / "warehouse.duckdb") == reference["tables"], log
        assert tree_digest(tmp_path / "exports") == reference["exports"], log
        assert _artifacts(tmp_path / "artifacts") == reference["artifacts"], log
    print("\n".join(log))
    assert sum("killed=True" in line for line in log) >= BUILD_KILLS // 2, log


def _kill_while_writing(proc: subprocess.Popen, out: Path, extra: float) -> tuple[bool, str]:
    """SIGKILL `extra` s after the export starts writing its batch (a `.tmp-*` folder appears);
    (was it killed while writing, the last line it printed)."""
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if out.is_dir() and any(p.name.startswith(".tmp-") for p in out.iterdir()):
            time.sleep(extra)
            return _kill_after(proc, 0)
        time.sleep(0.002)
    return _kill_after(proc, 0)


def test_an_export_killed_anywhere_leaves_no_partial_batch(reference: dict, tmp_path: Path) -> None:
    """Kills at random times of the whole export (start-up, reading, payloads), and kills
    timed from the moment the batch starts being written (records, manifest, rename)."""
    rng = random.Random(SEED + 1)
    warehouse = reference["work"] / "warehouse.duckdb"
    out = tmp_path / "exports"
    command = ["export", "--warehouse", str(warehouse), "--out", str(out)]
    plan = [("at", d) for d in _delays(reference["export_seconds"], 2, rng, 0.5, 1.0)]
    plan += [("writing+", rng.uniform(0, 0.03)) for _ in range(EXPORT_KILLS)]
    log = []
    for how, delay in plan:
        proc = _start(command, tmp_path)
        if how == "at":
            killed, last_line = _kill_after(proc, delay)
        else:
            killed, last_line = _kill_while_writing(proc, out, delay)
        log.append(f"{how} {delay:5.3f}s killed={killed} last: {last_line}")
        complete = assert_batches_complete(out)
        assert set(complete) <= {Path(n).parts[0] for n in reference["exports"]}, log
        _finish(_start(command, tmp_path))
        assert tree_digest(out) == reference["exports"], log
    print("\n".join(log))
    assert sum("writing+" in line and "killed=True" in line for line in log) >= 3, log
