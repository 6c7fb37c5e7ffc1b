"""The Spark groundwork: relations read the same on Spark as on DuckDB, and Python models run
in the local session (profile_enrichment.spark_dbt).

`make test-engines` installs the optional `spark` extra (pyspark) and Java and runs them
(marker `spark`, with tests/test_engines_spark.py); `make test` deselects them. Without pyspark or Java
they fail with what to install, never skip. One local SparkSession for the module (~15 s).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from profile_enrichment.ml import relations
from profile_enrichment.ml.workflows import (
    MLConfig,
    as_of_from,
    bounded_rows,
    latest_snapshot,
)

pytestmark = pytest.mark.spark

ROWS_SQL = (
    "select concat('c', cast(i % 1000 as string)) as customer_id, "
    "date_add(date'2025-01-01', cast(i div 1000 as int)) as as_of_date, "
    "i as value, cast(i as decimal(12, 2)) / 4 as amount, "
    "timestamp'2025-01-01 10:00:00' + make_interval(0, 0, 0, 0, 0, 0, i) as event_at, "
    "case when i % 7 = 0 then null else cast(i as int) end as maybe_count, "
    "case when i % 5 = 0 then null else i % 2 = 0 end as maybe_flag "
    "from range(6000) as t(i)"
)


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory):
    try:
        import pyspark  # noqa: F401
    except ImportError:
        pytest.fail("pyspark is not installed: make test-engines installs the spark extra")
    if shutil.which("java") is None:
        pytest.fail("Spark needs Java 17+: make test-engines installs openjdk-17-jre-headless")
    from profile_enrichment import spark_dbt
    from profile_enrichment.engines.local_spark import session_config

    root = tmp_path_factory.mktemp("spark")
    session = spark_dbt.spark_session(session_config(root))
    yield session
    session.stop()


def test_spark_rows_become_pandas_like_duckdb_df(spark) -> None:
    import duckdb

    spark_frame = relations.to_pandas(spark.sql(ROWS_SQL))
    duck_frame = relations.to_pandas(
        duckdb.sql(
            "select 'c' || (i % 1000) as customer_id, date '2025-01-01' + cast(i // 1000 as integer)"
            " as as_of_date, i as value, cast(i as decimal(12, 2)) / 4 as amount,"
            " timestamp '2025-01-01 10:00:00' + to_seconds(i) as event_at,"
            " case when i % 7 = 0 then null else cast(i as integer) end as maybe_count,"
            " case when i % 5 = 0 then null else i % 2 = 0 end as maybe_flag"
            " from range(6000) t(i)"
        )
    )
    assert list(spark_frame.columns) == list(duck_frame.columns)
    # DuckDB's .df(): decimals as float64, dates as datetime64; Spark rows get the same.
    assert spark_frame["amount"].dtype == "float64"
    assert pd.api.types.is_datetime64_any_dtype(spark_frame["as_of_date"])
    assert spark_frame["event_at"].dt.tz is None  # naive UTC, as DuckDB's timestamp
    # Integers and booleans with nulls keep a nullable type (Arrow alone gives float64 and
    # object): the same dtypes give the same training-data fingerprint, so the same
    # model_version on both engines.
    assert str(spark_frame["maybe_count"].dtype) == "Int32"
    assert str(spark_frame["maybe_flag"].dtype) == "boolean"
    pd.testing.assert_frame_equal(
        spark_frame.sort_values("value").reset_index(drop=True),
        duck_frame.sort_values("value").reset_index(drop=True),
    )


def test_bounded_rows_and_latest_snapshot_on_spark(spark) -> None:
    rel = spark.sql(ROWS_SQL)
    config = MLConfig(artifacts_dir=Path("."), as_of_date="2025-02-01")
    assert len(bounded_rows(rel, config)) == 6000
    small = MLConfig(artifacts_dir=Path("."), as_of_date="2025-02-01", max_training_rows=1500)
    sample = bounded_rows(rel, small)
    assert 900 <= len(sample) <= 2100
    assert (sample.groupby("customer_id").size() == 6).all()  # whole customers
    assert sorted(bounded_rows(rel, small)["value"]) == sorted(sample["value"])
    assert list(bounded_rows(rel, small, ["value"]).columns) == ["value"]
    latest = latest_snapshot(rel)
    assert len(latest) == 1000 and latest["as_of_date"].nunique() == 1
    assert len(latest_snapshot(rel.limit(0))) == 0
    assert as_of_from(spark.sql("select date'2024-04-30' as as_of_date")) == "2024-04-30"
    assert as_of_from(spark.sql("select cast(null as date) as as_of_date")) is None
    assert relations.row_count(relations.where(rel, "value < 10")) == 10


def test_local_session_helper_runs_compiled_python_model(spark) -> None:
    """The helper executes dbt-spark's compiled notebook code with `spark` bound to the
    session: dbt.ref reads a table, a pandas result is written back with saveAsTable."""
    from profile_enrichment import spark_dbt

    spark.sql("create schema if not exists pe_test")
    spark.sql("drop table if exists pe_test.upstream")
    spark.sql("create table pe_test.upstream using parquet as " + ROWS_SQL)
    compiled = """
from profile_enrichment.ml import workflows

def model(dbt, session):
    frame = workflows.to_pandas(dbt.ref("upstream"))
    return frame.groupby("customer_id", as_index=False)["value"].sum()

class dbtObj:
    def __init__(self, load_df_function):
        self.ref = lambda name: load_df_function("pe_test." + name)

dbt = dbtObj(spark.table)
df = model(dbt, spark)
spark.createDataFrame(df).write.mode("overwrite").format("parquet").saveAsTable("pe_test.out")
"""
    helper = spark_dbt.LocalSessionPythonJobHelper({"alias": "out", "config": {}}, None)
    helper.submit(compiled)
    assert spark.table("pe_test.out").count() == 1000


def test_install_registers_local_session_as_default_for_session_profiles() -> None:
    from dbt.adapters.spark.impl import SparkAdapter

    from profile_enrichment import spark_dbt

    spark_dbt.install()
    spark_dbt.install()  # idempotent

    class FakeAdapter:
        config = type("C", (), {"credentials": type("Cr", (), {"method": "session"})()})()

    helpers = SparkAdapter.python_submission_helpers.fget(FakeAdapter())
    assert helpers["local_session"] is spark_dbt.LocalSessionPythonJobHelper
    assert "all_purpose_cluster" in helpers
    assert SparkAdapter.default_python_submission_method.fget(FakeAdapter()) == "local_session"
    FakeAdapter.config.credentials.method = "thrift"
    assert (
        SparkAdapter.default_python_submission_method.fget(FakeAdapter()) == "all_purpose_cluster"
    )


def test_pandas_results_reach_spark_through_arrow_even_without_rows(spark) -> None:
    """pyspark cannot infer a schema from a pandas frame with no rows; every ML model returns
    one when there is nothing to score, so the notebook `spark` converts through Arrow."""
    from profile_enrichment import spark_dbt
    from profile_enrichment.ml import workflows

    notebook = spark_dbt.NotebookSpark(spark)
    untyped = notebook.createDataFrame(pd.DataFrame(columns=["customer_id", "score"]))
    assert untyped.count() == 0
    assert untyped.schema.simpleString() == "struct<customer_id:string,score:string>"
    typed = notebook.createDataFrame(workflows.empty_output("ml_clv_scores"))
    assert dict(typed.dtypes)["clv_predicted_value"] == "double"
    rows = notebook.createDataFrame(pd.DataFrame({"a": ["x", None], "n": [1.5, None]}))
    assert rows.count() == 2
    assert notebook.table is not None  # everything else is the session's


def _dbt_spark_notebook_tail() -> str:
    """The Python that dbt-spark appends to every compiled Python model, from the installed
    dbt-spark: from its pandas/pandas-on-Spark imports to the conversion to a Spark frame."""
    import dbt.include.spark

    macro = Path(dbt.include.spark.__path__[0]) / "macros" / "materializations" / "table.sql"
    text = macro.read_text()
    start = text.index("# make sure pyspark exists in the namepace")
    end = text.index('else:\n  msg = f"{type(df)} is not a supported type')
    return text[start:end]


def test_python_models_in_parallel_threads_never_half_import_pandas_on_spark() -> None:
    """dbt runs two Python models at once. With pandas 3 `import pyspark.pandas` fails part-way,
    and a second thread could see the half-imported module and fail with "module 'pyspark' has
    no attribute 'pandas'" (a CI failure). After install() the tail of every model takes the
    plain `spark.createDataFrame` path, in any number of threads."""
    import threading

    from profile_enrichment import spark_dbt

    spark_dbt.install()
    tail = compile(_dbt_spark_notebook_tail(), "<dbt-spark notebook tail>", "exec")

    class Session:
        def createDataFrame(self, frame):  # the Spark method the tail calls
            return ("converted", len(frame))

    outcomes: list[object] = []

    def run_tail() -> None:
        namespace = {"df": pd.DataFrame({"a": [1, 2]}), "spark": Session()}
        try:
            exec(tail, namespace)
            outcomes.append(namespace["df"])
        except Exception as error:  # the assertion below names it
            outcomes.append(error)

    for _ in range(10):
        threads = [threading.Thread(target=run_tail) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert outcomes == [("converted", 2)] * 40
