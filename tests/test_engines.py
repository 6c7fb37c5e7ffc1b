"""The same project on PostgreSQL: the SQL layer builds, its dbt tests pass, and every table
equals the DuckDB build of the same files, row by row.

A real PostgreSQL server is started on 127.0.0.1 for the module (engines/local_postgres.py) and the
pipeline runs through the CLI as a user would: `profile-enrichment run --target postgres`
(load the raw files, then `dbt build --selector sql_layer`). `make test-engines` runs this
file; `make test` does not (it needs dbt-postgres and a PostgreSQL installation).
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from conftest import run_cli
from engine_compare import (
    BAD_LINES,
    BOOKKEEPING,
    MUST_COMPARE,
    QUARANTINE_REASONS,
    clv_sql_vs_python,
    compare_all,
    propensity_sql_vs_python,
    read_dbapi,
    read_duckdb,
)
from profile_enrichment.engines.local_postgres import LocalPostgres, pg_bindir

pytestmark = [pytest.mark.engines, pytest.mark.dbt]


@pytest.fixture(scope="module")
def postgres():
    if pg_bindir() is None:
        pytest.fail("PostgreSQL is not installed: run `make postgres` (make test-engines does)")
    server = LocalPostgres().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres_runs(postgres: LocalPostgres, engine_raw: Path, duckdb_warehouse: Path) -> list:
    """Two runs through the CLI: a full build, then a rerun (the incremental models' path).
    They share the DuckDB run's artifacts: its champions, compiled to SQL, score there."""
    artifacts = duckdb_warehouse.parent / "artifacts"
    command = [
        "run", "--raw", str(engine_raw), "--target", "postgres", "--artifacts", str(artifacts),
    ]  # fmt: skip
    return [run_cli(*command, env=postgres.env()) for _ in range(2)]


def _pg_connect(server: LocalPostgres):
    import psycopg2  # the postgres extra: make test-engines installs it

    env = server.env()
    return psycopg2.connect(
        host=env["PE_PG_HOST"], port=int(env["PE_PG_PORT"]), user=env["PE_PG_USER"],
        dbname=env["PE_PG_DBNAME"],
    )  # fmt: skip


def _pg_tables(con) -> list[str]:
    with con.cursor() as cursor:
        cursor.execute(
            "select table_name from information_schema.tables"
            " where table_schema = 'main' and table_type = 'BASE TABLE' order by 1"
        )
        # ml_scoring_sql: the DuckDB build keeps one compiled scorer per engine; the CLI loads
        # only PostgreSQL's here.
        bookkeeping = {*BOOKKEEPING, "ml_scoring_sql"}
        return [row[0] for row in cursor.fetchall() if row[0] not in bookkeeping]


def test_postgres_builds_and_tests_the_sql_layer(postgres_runs) -> None:
    for result in postgres_runs:
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        assert "ERROR=0" in result.stdout and "PASS=" in result.stdout
        assert "events:      " in result.stdout  # the run summary came back from the engine
    first = postgres_runs[0].stdout
    assert "loaded:      aep.experience_events" in first
    assert "churn champion" in first and "conversion champion" in first
    assert "6 quarantined" in first


def test_every_sql_layer_table_equals_duckdb_row_by_row(
    postgres_runs, postgres: LocalPostgres, duckdb_warehouse: Path
) -> None:
    assert all(r.returncode == 0 for r in postgres_runs)
    pg = _pg_connect(postgres)
    duck = duckdb.connect(str(duckdb_warehouse), read_only=True)
    try:
        names = _pg_tables(pg)
        assert set(names) >= MUST_COMPARE, MUST_COMPARE - set(names)
        counts, problems = compare_all(
            names,
            lambda name: read_duckdb(duck, f"main.{name}"),
            lambda name: read_dbapi(pg, f"main.{name}"),
        )
    finally:
        duck.close()
        pg.close()
    assert problems == []
    # the comparison compared something: real rows in the feature, snapshot and label tables
    for name in ("customer_features", "customer_feature_snapshots", "customer_labels"):
        assert counts[name] > 100, counts
    assert counts["rejected_events"] == len(BAD_LINES)


def test_scores_computed_in_postgres_sql_equal_the_python_scores(
    postgres_runs, postgres: LocalPostgres, duckdb_warehouse: Path
) -> None:
    """The champions trained in Python (DuckDB run), compiled to SQL, run inside PostgreSQL:
    every customer of both populations, probability within 1e-9, the rest exact."""
    assert all(r.returncode == 0 for r in postgres_runs)
    pg = _pg_connect(postgres)
    duck = duckdb.connect(str(duckdb_warehouse), read_only=True)
    try:
        compared, problems = propensity_sql_vs_python(
            lambda name: read_dbapi(pg, f"main.{name}"),
            lambda name: read_duckdb(duck, f"main.{name}"),
        )
    finally:
        duck.close()
        pg.close()
    assert problems == []
    assert compared > 200


def test_lifetime_values_computed_in_postgres_sql_equal_the_python_values(
    postgres_runs, postgres: LocalPostgres, duckdb_warehouse: Path
) -> None:
    """P(alive) and the expected order value, the closed-form part of lifetime value."""
    assert all(r.returncode == 0 for r in postgres_runs)
    pg = _pg_connect(postgres)
    duck = duckdb.connect(str(duckdb_warehouse), read_only=True)
    try:
        compared, problems, smallest_alive = clv_sql_vs_python(
            lambda name: read_dbapi(pg, f"main.{name}"),
            lambda name: read_duckdb(duck, f"main.{name}"),
        )
    finally:
        duck.close()
        pg.close()
    assert problems == []
    assert compared > 200
    assert smallest_alive < 0.9  # not all trivially 1


def test_quarantine_reasons_match_on_both_engines(postgres, postgres_runs) -> None:
    pg = _pg_connect(postgres)
    try:
        with pg.cursor() as cursor:
            cursor.execute("select reason_code, count(*) from main.rejected_events group by 1")
            reasons = dict(cursor.fetchall())
    finally:
        pg.close()
    assert reasons == QUARANTINE_REASONS


@pytest.mark.parametrize(
    ("port", "message"),
    [("1", "cannot connect to PostgreSQL at 127.0.0.1:1"), ("abc", "PE_PG_PORT must be a port")],
)
def test_an_unreachable_or_misconfigured_server_is_one_clear_line(
    engine_raw: Path, port: str, message: str
) -> None:
    result = run_cli("load-raw", "--raw", str(engine_raw), env={"PE_PG_PORT": port})
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        result.stderr.strip().splitlines()[-1]
    ]


def test_the_benchmark_measures_postgres_and_spark_beside_duckdb(tmp_path: Path) -> None:
    """`bench --engines postgres,spark` at a tiny size: each engine measured beside DuckDB on
    the same work, the table written. Timings are never asserted (the machine is shared)."""
    result = run_cli(
        "bench", "--customers", "3000", "--days", "540", "--seed", "5",
        "--data-dir", str(tmp_path / "data"), "--results-dir", str(tmp_path / "results"),
        "--memory-limit", "2GB", "--engines", "postgres,spark",
        timeout=2400,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (path,) = (tmp_path / "results").glob("*.json")
    engines = json.loads(path.read_text())["engines"]
    assert set(engines) == {"duckdb", "postgres", "duckdb_pipeline", "spark"}
    for stage in engines.values():
        assert stage["returncode"] == 0 and stage["seconds"] > 0 and stage["peak_rss_bytes"] > 0
    assert engines["duckdb"]["ratio_to_duckdb"] == 1.0
    assert engines["duckdb_pipeline"]["ratio_to_duckdb"] == 1.0
    assert engines["postgres"]["workload"] == "sql_layer"
    assert engines["spark"]["workload"] == "pipeline"
    ratio = engines["spark"]["seconds"] / engines["duckdb_pipeline"]["seconds"]
    assert engines["spark"]["ratio_to_duckdb"] == round(ratio, 2)
    markdown = path.with_suffix(".md").read_text()
    for name in ("postgres", "duckdb", "spark", "duckdb_pipeline"):
        assert f"| {name} |" in markdown
