"""`run --if-changed`: what counts as a change. (The skip itself, end to end, is checked by the
benchmark's no-change stage in tests/test_bench.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from profile_enrichment import run_state


@pytest.fixture
def setup(tmp_path: Path):
    project = tmp_path / "project"
    for folder in ("models", "macros", "python_models", "seeds", "tests"):
        (project / folder).mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: x\n")
    (project / "models" / "a.sql").write_text("select 1\n")
    (project / "tests" / "check.sql").write_text("select 1 where false\n")
    raw = tmp_path / "raw"
    (raw / "events").mkdir(parents=True)
    (raw / "events" / "part-0.parquet").write_bytes(b"x" * 10)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    warehouse = tmp_path / "warehouse.duckdb"
    warehouse.write_bytes(b"w")
    args = (["build", "--target", "dev"], {"raw_dir": str(raw), "as_of_date": ""}, artifacts)

    def current():
        return run_state.fingerprint(project, raw, *args)

    def record(summary=None):
        return run_state.record_run(warehouse, project, raw, *args, summary)

    return project, raw, warehouse, current, record


def test_an_unchanged_state_is_recognised(setup):
    _, _, warehouse, current, record = setup
    assert run_state.unchanged_since_last_run(warehouse, current()) is None  # nothing recorded
    assert record({"records_read": 3}) is True
    state = run_state.unchanged_since_last_run(warehouse, current())
    assert state is not None and state["summary"] == {"records_read": 3}


@pytest.mark.parametrize(
    "change",
    ["new_raw_file", "touched_raw_file", "model_code", "dbt_test", "warehouse", "env"],
)
def test_any_change_forces_a_build(setup, change, monkeypatch):
    project, raw, warehouse, current, record = setup
    record()
    if change == "new_raw_file":
        (raw / "events" / "part-1.parquet").write_bytes(b"y")
    elif change == "touched_raw_file":
        path = raw / "events" / "part-0.parquet"
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    elif change == "model_code":
        (project / "models" / "a.sql").write_text("select 2\n")
    elif change == "dbt_test":
        (project / "tests" / "check.sql").write_text("select 1\n")
    elif change == "warehouse":
        warehouse.write_bytes(b"changed by someone else")
    else:
        monkeypatch.setenv("PE_TENANT_ID", "other")
    assert run_state.unchanged_since_last_run(warehouse, current()) is None, change


def test_pytest_files_are_not_dbt_code(setup):
    project, _, warehouse, current, record = setup
    record()
    (project / "tests" / "test_something.py").write_text("def test(): pass\n")
    assert run_state.unchanged_since_last_run(warehouse, current()) is not None


def test_future_events_with_a_moving_clock_are_never_skipped(setup, monkeypatch):
    _, _, warehouse, current, record = setup
    monkeypatch.delenv("PE_INGESTION_CLOCK", raising=False)
    summary = {"quarantine_reasons": {"future_timestamp": 2}}
    assert record(summary) is False
    assert run_state.unchanged_since_last_run(warehouse, current()) is None
    monkeypatch.setenv("PE_INGESTION_CLOCK", "2025-01-01T00:00:00Z")  # pinned: time cannot move
    assert record(summary) is True
    assert run_state.unchanged_since_last_run(warehouse, current()) is not None


# -- incremental staging: append the new raw files, or re-stage them all ------------------------


def test_staging_appends_when_only_new_files_arrived(setup, monkeypatch):
    project, raw, warehouse, current, record = setup
    assert run_state.staging_rebuild_reason(warehouse, current()) == (
        "no record of a last successful build"
    )
    record()
    assert run_state.staging_rebuild_reason(warehouse, current()) is None
    (raw / "events" / "part-1.parquet").write_bytes(b"new day")
    (raw / "profiles").mkdir()
    (raw / "profiles" / "p.parquet").write_bytes(b"profiles are staged whole anyway")
    monkeypatch.setenv("PE_TENANT_ID", "other")  # not read by staging
    assert run_state.staging_rebuild_reason(warehouse, current()) is None
    other_day = (["build", "--target", "dev"], {"raw_dir": str(raw), "as_of_date": "2025-01-02"})
    changed_as_of = run_state.fingerprint(project, raw, *other_day, raw.parent / "artifacts")
    assert run_state.staging_rebuild_reason(warehouse, changed_as_of) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("removed_raw_file", "raw file events/part-0.parquet was removed"),
        ("touched_raw_file", "raw file events/part-0.parquet changed"),
        ("rewritten_raw_file", "raw file events/part-0.parquet changed"),
        ("model_code", "the project's code changed since the last build"),
        ("raw_dir", "var raw_dir changed since the last build"),
        ("currency_code", "var currency_code changed since the last build"),
        ("clock_env", "var ingestion_clock changed since the last build"),
        ("warehouse", "the warehouse changed after the last recorded build"),
        ("state_lost", "no record of a last successful build"),
    ],
)
def test_staging_is_rebuilt_when_a_staged_input_changed(setup, change, reason, monkeypatch):
    project, raw, warehouse, current, record = setup
    record()
    path = raw / "events" / "part-0.parquet"
    fingerprint = None
    if change == "removed_raw_file":
        path.unlink()
    elif change == "touched_raw_file":
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    elif change == "rewritten_raw_file":
        st = path.stat()
        path.write_bytes(b"y" * 11)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same time, other size
    elif change == "model_code":
        (project / "models" / "a.sql").write_text("select 2\n")
    elif change == "raw_dir":
        args = (["build", "--target", "dev"], {"raw_dir": "elsewhere", "as_of_date": ""})
        fingerprint = run_state.fingerprint(project, raw, *args, raw.parent / "artifacts")
    elif change == "currency_code":  # validated file by file with the old currency
        args = (
            ["build", "--target", "dev"],
            {"raw_dir": str(raw), "as_of_date": "", "currency_code": "EUR"},
        )
        fingerprint = run_state.fingerprint(project, raw, *args, raw.parent / "artifacts")
    elif change == "clock_env":
        monkeypatch.setenv("PE_INGESTION_CLOCK", "2030-01-01")
    elif change == "warehouse":
        warehouse.write_bytes(b"changed by someone else")
    else:
        run_state.state_path(warehouse).unlink()
    assert run_state.staging_rebuild_reason(warehouse, fingerprint or current()) == reason
