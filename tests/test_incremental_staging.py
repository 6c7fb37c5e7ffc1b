"""Incremental staging through the CLI: a nightly run parses only the raw files that arrived,
and a raw file that changed after it was staged makes the run re-stage every file.

Three real `profile-enrichment run`s on one DuckDB file (about a minute each): a first load of
one file; a night that adds a second file (appended: the executed SQL skips the first file);
then the first file is rewritten with fewer events (re-staged: every table counts the new
content). The SQL dbt compiled for each run (target/compiled/) shows what it read.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from conftest import query, run_cli, split_off_last_day

pytestmark = [pytest.mark.dbt, pytest.mark.slow]

STAGED = ("stg_aep__experience_events", "stg_aep__product_list_items", "stg_aep__event_identities")


def _run(work: Path, raw: Path) -> str:
    ran = run_cli(
        "run",
        "--raw",
        str(raw),
        "--warehouse",
        str(work / "warehouse.duckdb"),
        "--artifacts",
        str(work / "artifacts"),
        "--no-export",
        "--no-report",
        "--quiet",
        env={"DBT_TARGET_PATH": str(work / "target"), "DBT_LOG_PATH": str(work / "logs")},
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    return ran.stdout


def _executed_sql(work: Path, model: str) -> str:
    folder = work / "target" / "compiled" / "profile_enrichment" / "models" / "staging" / "aep"
    return (folder / f"{model}.sql").read_text()


def _staged_per_file(warehouse: Path, model: str) -> dict[str, int]:
    rows = query(warehouse, f"select source_file, count(*) from {model} group by 1")
    return {Path(name).name: n for name, n in rows}


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("incremental_staging")
    raw, staging, _ = split_off_last_day(work, customers=120, days=90, seed=5)
    first, second = raw / "events" / "a.parquet", raw / "events" / "b.parquet"
    con = duckdb.connect()
    warehouse = work / "warehouse.duckdb"

    first_run = _run(work, raw)
    shutil.move(staging, second)
    second_run = _run(work, raw)
    appended = {m: _executed_sql(work, m) for m in STAGED}
    after_append = {m: _staged_per_file(warehouse, m) for m in STAGED}

    # the first file is rewritten: the events of its first 30 days are gone
    fewer = work / "a.parquet"
    con.execute(
        f"copy (select * from read_parquet('{first}') where cast(\"timestamp\" as date) >= "
        f"(select min(cast(\"timestamp\" as date)) + 30 from read_parquet('{first}'))) "
        f"to '{fewer}' (format parquet)"
    )
    (kept,) = con.execute(f"select count(*) from read_parquet('{fewer}')").fetchone()
    shutil.move(fewer, first)
    third_run = _run(work, raw)
    con.close()
    return {
        "work": work,
        "warehouse": warehouse,
        "runs": (first_run, second_run, third_run),
        "appended": appended,
        "after_append": after_append,
        "rewritten": {m: _executed_sql(work, m) for m in STAGED},
        "kept": kept,
    }


def test_a_night_with_a_new_file_parses_only_that_file(nights: dict) -> None:
    first_run, second_run, _ = nights["runs"]
    assert "parsed again" not in first_run  # a new warehouse: nothing to re-stage
    assert "parsed again" not in second_run
    for model, sql in nights["appended"].items():
        assert "source_file not in (" in sql and "a.parquet'" in sql, model
        assert "b.parquet'" not in sql, model
    files = nights["after_append"]["stg_aep__experience_events"]
    assert set(files) == {"a.parquet", "b.parquet"} and min(files.values()) > 0
    for model in STAGED[1:]:
        assert set(nights["after_append"][model]) == {"a.parquet", "b.parquet"}, model


def test_a_rewritten_file_makes_the_run_stage_every_file_again(nights: dict) -> None:
    *_, third_run = nights["runs"]
    assert "staging:     every raw file is parsed again (raw file events/a.parquet changed)" in (
        third_run
    )
    for model, sql in nights["rewritten"].items():
        assert "source_file not in (" not in sql, model
    now = _staged_per_file(nights["warehouse"], "stg_aep__experience_events")
    before = nights["after_append"]["stg_aep__experience_events"]
    assert now["a.parquet"] == nights["kept"] < before["a.parquet"]
    assert now["b.parquet"] == before["b.parquet"]
    (orphans,) = query(
        nights["warehouse"],
        """
        select count(*) from stg_aep__product_list_items as lines
        where lines.record_id not in (select record_id from stg_aep__experience_events)
        """,
    )
    assert orphans == (0,)
