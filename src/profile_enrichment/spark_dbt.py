"""Run dbt on a local Spark (dbt-spark, ``method: session``) with the Python models in-process.

dbt-spark submits Python models only to Databricks (``submission_method`` all_purpose_cluster
or job_cluster: a notebook upload over HTTPS). With ``method: session`` the SQL already runs in
a SparkSession inside the dbt process, so this module adds a ``local_session`` submission
method that runs a Python model's compiled code in that same session, and makes it the default
for session profiles. dbt has no plugin hook for submission methods, so it patches
``SparkAdapter`` before handing over to dbt's own command line::

    python -m profile_enrichment.spark_dbt build --target spark   # same arguments as `dbt`

The compiled code of a dbt-spark Python model is a notebook script: the model file, a
``dbtObj`` whose ``ref()``/``source()`` call ``spark.table(...)``, then a tail that turns the
returned (pandas or Spark) DataFrame into a Spark DataFrame and writes it with
``saveAsTable``. It expects a global ``spark``, as a Databricks notebook has; the helper
executes it with ``spark`` bound to the session dbt's SQL uses, so the model sees the tables
that dbt has just built and its output is visible to the SQL models after it.

Needs the ``spark`` extra (``pip install -c requirements.lock -e '.[spark]'``) and Java 17+.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import Any

LOCAL_SESSION = "local_session"


def _quiet_pyspark() -> None:
    """PySpark 4.3 warns on every pandas conversion that pandas 3 is 'not yet fully
    supported'; the conversions this project uses are tested (tests/test_spark.py)."""
    warnings.filterwarnings(
        "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
    )


def spark_session(server_side_parameters: dict[str, str] | None = None) -> Any:
    """The SparkSession of dbt-spark's ``method: session`` (built the same way as its cursor:
    Hive support on, the profile's ``server_side_parameters`` as config). getOrCreate returns
    the session that dbt's SQL already uses."""
    from pyspark.sql import SparkSession

    _quiet_pyspark()
    builder = SparkSession.builder.enableHiveSupport()
    for key, value in (server_side_parameters or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def pandas_to_arrow(frame: Any) -> Any:
    """A pandas DataFrame as an Arrow table that Spark can take as it is: columns that Arrow
    cannot type (all None, or no rows and object dtype) become strings."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    fields = [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))


class NotebookSpark:
    """The ``spark`` global that dbt-spark's compiled Python model expects: the session itself,
    except that a pandas result reaches Spark through Arrow. pyspark cannot infer a schema for
    a pandas frame with no rows (CANNOT_INFER_EMPTY_SCHEMA: every model returns one when there
    is nothing to score), and its pandas path does not support pandas 3 yet (pyspark.pandas
    does not even import), while an Arrow table always carries its schema."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def createDataFrame(self, data: Any, schema: Any = None, *args: Any, **kwargs: Any) -> Any:
        import pandas as pd

        if schema is None and not args and not kwargs and isinstance(data, pd.DataFrame):
            return self._session.createDataFrame(pandas_to_arrow(data))
        return self._session.createDataFrame(data, schema, *args, **kwargs)


class LocalSessionPythonJobHelper:
    """A dbt PythonJobHelper that runs the compiled model in the local SparkSession."""

    def __init__(self, parsed_model: dict, credentials: Any) -> None:
        self.parsed_model = parsed_model
        self.credentials = credentials
        self.identifier = parsed_model["alias"]

    def submit(self, compiled_code: str) -> dict[str, Any]:
        _quiet_pyspark()
        spark = spark_session(getattr(self.credentials, "server_side_parameters", None))
        namespace: dict[str, Any] = {
            "__name__": f"dbt_python_model_{self.identifier}",
            "spark": NotebookSpark(spark),
        }
        started = time.monotonic()
        # The code is the project's own model file plus dbt's generated wrapper, compiled by
        # dbt from this project: the same trust as any dbt Python model.
        exec(compile(compiled_code, f"<dbt python model {self.identifier}>", "exec"), namespace)
        return {"seconds": round(time.monotonic() - started, 3)}


def block_pandas_on_spark() -> None:
    """Make ``import pyspark.pandas`` fail at once, the same way in every thread.

    dbt-spark's notebook tail tries ``import pyspark.pandas`` in every Python model and falls
    back to ``spark.createDataFrame`` on ImportError. With pandas 3 that import fails part-way
    through, and dbt runs two Python models at a time in threads: one thread can find the
    other's half-imported module in ``sys.modules``, its ``import`` succeeds, and the tail's
    ``pyspark.pandas.frame`` raises "module 'pyspark' has no attribute 'pandas'" (CI failed
    on it in ml_propensity_validation; 44 of 80 threads in a 4-thread reproduction). The
    models hand pandas results to Spark through Arrow (``NotebookSpark``), never through
    pandas-on-Spark, so a ``None`` in ``sys.modules`` turns the import into an immediate
    ImportError. A pandas-on-Spark that some code in this process already imported is kept.
    """
    sys.modules.setdefault("pyspark.pandas", None)


def install() -> None:
    """Register ``local_session`` with dbt-spark and make it the default for session profiles.

    Databricks submission needs a token and a cluster, so it can never work with
    ``method: session``; other methods keep dbt-spark's default (all_purpose_cluster).
    """
    from dbt.adapters.spark.impl import SparkAdapter

    block_pandas_on_spark()
    if getattr(SparkAdapter, "_pe_local_session", False):
        return
    original_helpers = SparkAdapter.python_submission_helpers
    original_default = SparkAdapter.default_python_submission_method

    def python_submission_helpers(self: Any) -> dict[str, Any]:
        return {**original_helpers.fget(self), LOCAL_SESSION: LocalSessionPythonJobHelper}

    def default_python_submission_method(self: Any) -> str:
        method = getattr(self.config.credentials, "method", None)
        if getattr(method, "value", method) == "session":
            return LOCAL_SESSION
        return original_default.fget(self)

    SparkAdapter.python_submission_helpers = property(python_submission_helpers)
    SparkAdapter.default_python_submission_method = property(default_python_submission_method)
    SparkAdapter._pe_local_session = True


def main(argv: list[str] | None = None) -> int:
    """``dbt`` with the local submission method installed (same arguments, same exit codes)."""
    # Spark resolves the host name before it reads any config; bind to loopback from the start.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    _quiet_pyspark()
    install()
    from dbt.cli.main import cli

    # Exactly what the `dbt` console script does; click raises SystemExit with dbt's code.
    sys.argv = ["dbt", *(sys.argv[1:] if argv is None else argv)]
    try:
        cli()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
