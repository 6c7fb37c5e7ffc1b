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
from engine_compare import compare_all, read_dbapi, read_duckdb
from profile_enrichment.engines.local_postgres import LocalPostgres, pg_bindir

pytestmark = [pytest.mark.engines, pytest.mark.dbt]


# Tables that record how a run went rather than what the data says, and the compiled scorers
# (DuckDB's Python model keeps one per engine; the CLI loads only PostgreSQL's there).
BOOKKEEPING = {"int_identity_daily_activity_watermark", "ml_scoring_sql"}
# What the issue names: features, snapshots, labels, plus ingestion, quarantine and ADF output.
MUST_COMPARE = {
    "stg_aep__experience_events",
    "stg_aep__event_identities",
    "stg_aep__product_list_items",
    "int_events_validated",
    "rejected_events",
    "int_identity_links",
    "int_events_accepted",
    "int_identity_daily_activity",
    "int_purchase_journeys",
    "customer_features",
    "customer_feature_snapshots",
    "customer_category_affinity",
    "customer_top_categories",
    "customer_labels",
    "int_training_examples",
    "feature_catalog",
    "propensity_scores_in_sql",
    "clv_scores_in_sql",
}
# Records every engine must quarantine the same way (JSON Lines only: Parquet rows are always
# valid JSON). Reason codes: seeds/quarantine_reasons.csv.
BAD_LINES = [
    '{"_id": "bad-1", "eventType": "web.webpagedetails.pageViews"',  # invalid_json
    json.dumps({"eventType": "web.webpagedetails.pageViews", "timestamp": "2024-05-01T10:00:00Z",
                "identityMap": {"ECID": [{"id": "e-1"}]}}),  # missing_event_id
    json.dumps({"_id": "bad-3", "eventType": "web.webpagedetails.pageViews",
                "timestamp": "2024-02-30T10:00:00Z",
                "identityMap": {"ECID": [{"id": "e-3"}]}}),  # unparseable_timestamp
    json.dumps({"_id": "bad-4", "eventType": "no.such.type", "timestamp": "2024-05-01T10:00:00Z",
                "identityMap": {"ECID": [{"id": "e-4"}]}}),  # unknown_event_type
    json.dumps({"_id": "bad-5", "eventType": "commerce.purchases",
                "timestamp": "2024-05-01T10:00:00+02:00",
                "identityMap": {"ECID": [{"id": "e-5", "primary": True}]},
                "commerce": {"order": {"purchaseID": "o-5", "priceTotal": -3.5,
                                       "currencyCode": "USD"}}}),  # negative_amount
    json.dumps({"_id": "bad-6", "eventType": "web.webpagedetails.pageViews",
                "timestamp": "2024-05-01T10:00:00Z",
                "identityMap": {"Email_LC_SHA256": [{"id": "someone@example.com"}]}}),  # privacy
]  # fmt: skip


@pytest.fixture(scope="module")
def engine_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated JSON Lines plus a file of malformed records."""
    out = tmp_path_factory.mktemp("engines") / "raw"
    result = run_cli(
        "generate", "--customers", "300", "--days", "400", "--seed", "5",
        "--format", "jsonl", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (out / "events" / "zz-malformed.jsonl").write_text("\n".join(BAD_LINES) + "\n")
    return out


@pytest.fixture(scope="module")
def duckdb_warehouse(engine_raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("engines-duckdb")
    warehouse = folder / "warehouse.duckdb"
    result = run_cli(
        "run", "--raw", str(engine_raw), "--warehouse", str(warehouse),
        "--artifacts", str(folder / "artifacts"), "--no-export", "--no-report", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return warehouse


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
        return [row[0] for row in cursor.fetchall() if row[0] not in BOOKKEEPING]


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
    try:
        with pg.cursor() as cursor:
            cursor.execute(
                "select model_name, customer_id, probability, score, percentile, bucket,"
                " model_version from main.propensity_scores_in_sql"
            )
            in_sql = {(row[0], row[1]): row[2:] for row in cursor.fetchall()}
    finally:
        pg.close()
    in_python = {}
    duck = duckdb.connect(str(duckdb_warehouse), read_only=True)
    try:
        for name in ("churn", "conversion"):
            for row in duck.sql(
                f"select customer_id, {name}_probability, {name}_score, {name}_percentile,"
                f" {name}_bucket, {name}_model_version from main.{name}_propensity_scores"
            ).fetchall():
                in_python[(name, row[0])] = row[1:]
    finally:
        duck.close()
    assert len(in_python) > 200
    assert in_sql.keys() == in_python.keys()
    worst = max(abs(in_sql[key][0] - in_python[key][0]) for key in in_python)
    assert worst <= 1e-9
    assert {key: in_sql[key][1:] for key in in_sql} == {
        key: in_python[key][1:] for key in in_python
    }


def test_lifetime_values_computed_in_postgres_sql_equal_the_python_values(
    postgres_runs, postgres: LocalPostgres, duckdb_warehouse: Path
) -> None:
    """P(alive) and the expected order value, the closed-form part of lifetime value."""
    assert all(r.returncode == 0 for r in postgres_runs)
    columns = "customer_id, clv_probability_alive, clv_expected_order_value, "
    pg = _pg_connect(postgres)
    try:
        with pg.cursor() as cursor:
            cursor.execute(f"select {columns} model_version from main.clv_scores_in_sql")
            in_sql = {row[0]: row[1:] for row in cursor.fetchall()}
    finally:
        pg.close()
    duck = duckdb.connect(str(duckdb_warehouse), read_only=True)
    try:
        in_python = {
            row[0]: row[1:]
            for row in duck.sql(
                f"select {columns} clv_model_version from main.customer_lifetime_values"
            ).fetchall()
        }
    finally:
        duck.close()
    assert len(in_python) > 200
    assert in_sql.keys() == in_python.keys()
    for key, (alive, order_value, version) in in_python.items():
        assert in_sql[key][0] == pytest.approx(alive, rel=1e-9, abs=1e-12)
        assert in_sql[key][1] == pytest.approx(order_value, rel=1e-9)
        assert in_sql[key][2] == version
    assert min(alive for alive, _, _ in in_python.values()) < 0.9  # not all trivially 1


def test_quarantine_reasons_match_on_both_engines(postgres, postgres_runs) -> None:
    pg = _pg_connect(postgres)
    try:
        with pg.cursor() as cursor:
            cursor.execute("select reason_code, count(*) from main.rejected_events group by 1")
            reasons = dict(cursor.fetchall())
    finally:
        pg.close()
    assert reasons == {
        "invalid_json": 1,
        "missing_event_id": 1,
        "unparseable_timestamp": 1,
        "unknown_event_type": 1,
        "negative_amount": 1,
        "no_usable_identity": 1,
    }


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


def test_the_benchmark_measures_the_sql_layer_on_postgres_beside_duckdb(tmp_path: Path) -> None:
    """`bench --engines postgres` at a tiny size: both engines measured, the table written.
    Timings are never asserted (the machine is shared)."""
    result = run_cli(
        "bench", "--customers", "3000", "--days", "540", "--seed", "5",
        "--data-dir", str(tmp_path / "data"), "--results-dir", str(tmp_path / "results"),
        "--memory-limit", "2GB", "--engines", "postgres",
        timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (path,) = (tmp_path / "results").glob("*.json")
    engines = json.loads(path.read_text())["engines"]
    assert set(engines) == {"duckdb", "postgres"}
    for stage in engines.values():
        assert stage["returncode"] == 0 and stage["seconds"] > 0 and stage["peak_rss_bytes"] > 0
    assert engines["duckdb"]["ratio_to_duckdb"] == 1.0
    markdown = path.with_suffix(".md").read_text()
    assert "| postgres |" in markdown and "| duckdb |" in markdown
