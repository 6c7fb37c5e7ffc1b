"""The same project on Spark: the whole pipeline builds there (the dbt Python models in the
local session), its dbt tests pass, and every table equals the DuckDB build of the same files,
row by row, Python model outputs included.

The pipeline runs through the CLI as a user would, twice (a full build, then the incremental
path, insert_overwrite on Spark): `profile-enrichment run --target spark` with its own
PE_SPARK_DIR. Spark's tables are then read in a process of their own (tests/spark_tables.py:
the Derby metastore takes one JVM at a time). `make test-engines` runs this file beside
tests/test_engines.py (PostgreSQL); `make test` does not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from conftest import run_cli
from engine_compare import (
    BOOKKEEPING,
    MUST_COMPARE,
    QUARANTINE_REASONS,
    clv_sql_vs_python,
    compare_all,
    propensity_sql_vs_python,
    read_duckdb,
    read_parquet,
)

pytestmark = [pytest.mark.engines, pytest.mark.spark, pytest.mark.dbt]

TESTS_DIR = Path(__file__).resolve().parent
# The Python models' outputs: on Spark they run in the local session, on the same features,
# so they must come out the same too (same training frames, same model versions).
PYTHON_OUTPUTS = {
    "ml_churn_scores",
    "ml_conversion_scores",
    "ml_clv_scores",
    "ml_segments",
    "ml_model_registry",
    "ml_scoring_sql",
    "churn_propensity_scores",
    "conversion_propensity_scores",
    "customer_lifetime_values",
    "customer_segments",
    "profile_insights",
}


@pytest.fixture(scope="module")
def spark_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        pytest.fail("pyspark is not installed: make test-engines installs the spark extra")
    if shutil.which("java") is None:
        pytest.fail("Spark needs Java 17+: make test-engines installs openjdk-17-jre-headless")
    return tmp_path_factory.mktemp("spark-target") / "spark"


@pytest.fixture(scope="module")
def spark_runs(engine_raw: Path, spark_dir: Path) -> list:
    """Two runs through the CLI: a full build, then a rerun (the incremental models' path)."""
    command = ["run", "--raw", str(engine_raw), "--target", "spark"]
    return [run_cli(*command, env={"PE_SPARK_DIR": str(spark_dir)}, timeout=1500) for _ in range(2)]


@pytest.fixture(scope="module")
def spark_tables(spark_runs, spark_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every table of the Spark warehouse as a Parquet file, read once dbt has exited."""
    assert all(r.returncode == 0 for r in spark_runs), spark_runs[-1].stdout[-3000:]
    out = tmp_path_factory.mktemp("spark-tables")
    result = subprocess.run(
        [sys.executable, str(TESTS_DIR / "spark_tables.py"), str(spark_dir), "main", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _read_spark(folder: Path):
    return lambda name: read_parquet(folder / f"{name}.parquet")


def test_spark_builds_and_tests_the_whole_pipeline(spark_runs) -> None:
    for result in spark_runs:
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        assert "ERROR=0" in result.stdout and "PASS=" in result.stdout
        # the Python models ran in the local session, and the SQL scoring test ran after them
        assert "OK created python table model main.ml_churn_scores" in result.stdout
        assert "PASS assert_sql_scores_equal_python_scores" in result.stdout
        assert "events:      " in result.stdout  # the run summary came back from the engine
        assert "6 quarantined" in result.stdout
        assert "warehouse:   Spark," in result.stdout


def test_every_table_equals_duckdb_row_by_row(spark_tables: Path, duckdb_warehouse: Path) -> None:
    names = sorted(p.stem for p in spark_tables.glob("*.parquet") if p.stem not in BOOKKEEPING)
    assert set(names) >= MUST_COMPARE | PYTHON_OUTPUTS, (MUST_COMPARE | PYTHON_OUTPUTS) - set(names)
    duck = duckdb.connect(str(duckdb_warehouse), read_only=True)
    try:
        counts, problems = compare_all(
            names, lambda name: read_duckdb(duck, f"main.{name}"), _read_spark(spark_tables)
        )
    finally:
        duck.close()
    assert problems == []
    for name in ("customer_features", "customer_feature_snapshots", "customer_labels"):
        assert counts[name] > 100, counts
    assert counts["churn_propensity_scores"] > 100, counts
    assert counts["rejected_events"] == len(QUARANTINE_REASONS)


def test_scores_computed_in_spark_sql_equal_spark_python_scores(spark_tables: Path) -> None:
    """Spark's own champions (trained in the local session), compiled to Spark SQL and run
    there, against the Python models' scores on Spark: probability within 1e-9, the rest
    exact; and the closed-form part of lifetime value."""
    read = _read_spark(spark_tables)
    compared, problems = propensity_sql_vs_python(read, read)
    assert problems == []
    assert compared > 200
    compared, problems, smallest_alive = clv_sql_vs_python(read, read)
    assert problems == []
    assert compared > 200
    assert smallest_alive < 0.9


def test_quarantine_reasons_match_duckdb(spark_tables: Path) -> None:
    rejected = read_parquet(spark_tables / "rejected_events.parquet")
    column = [c.lower() for c in rejected.columns].index("reason_code")
    reasons: dict[str, int] = {}
    for row in rejected.rows:
        reasons[row[column]] = reasons.get(row[column], 0) + 1
    assert reasons == QUARANTINE_REASONS


def test_without_java_the_spark_target_is_one_clear_line(engine_raw: Path, tmp_path: Path) -> None:
    """Checked before dbt starts: no JVM error from deep inside pyspark."""
    result = run_cli(
        "run", "--raw", str(engine_raw), "--target", "spark",
        env={"PATH": "/nonexistent", "JAVA_HOME": "", "PE_SPARK_DIR": str(tmp_path / "s")},
    )  # fmt: skip
    assert result.returncode == 2
    assert "error: the spark target needs Java 17 or newer" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "s").exists()
