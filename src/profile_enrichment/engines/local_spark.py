"""The local Spark target: what `profile-enrichment run --target spark` checks and runs.

dbt-spark's ``method: session`` starts Spark inside the dbt process (pyspark launches a local
JVM), so there is no server to start: the warehouse (Parquet tables) and the Derby metastore
live in a folder, ``PE_SPARK_DIR`` (default ``data/spark``, git-ignored). dbt runs through
``python -m profile_enrichment.spark_dbt``, which also runs the dbt Python models in that
session (see spark_dbt.py).

The Derby metastore is embedded: one process (JVM) at a time. Reading the tables after a run
(tests, scripts) therefore happens in a process of its own, once dbt has exited.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from profile_enrichment.errors import UserError

DEFAULT_SPARK_DIR = "data/spark"


def check_spark() -> None:
    """A clear error, before dbt starts, when the optional parts are missing."""
    if (
        importlib.util.find_spec("pyspark") is None
        or importlib.util.find_spec("dbt.adapters.spark") is None
    ):
        raise UserError(
            "the spark target needs the optional spark extra (dbt-spark, pyspark)",
            hint="pip install -c requirements.lock -e '.[spark]'   (or: make test-engines)",
        )
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise UserError(
            "the spark target needs Java 17 or newer, and none was found",
            hint="apt-get install openjdk-17-jre-headless   (or: make java)",
        )


def spark_dir(project_dir: Path) -> Path:
    """The folder of the warehouse and the metastore (PE_SPARK_DIR, relative to the project)."""
    path = Path(os.environ.get("PE_SPARK_DIR") or DEFAULT_SPARK_DIR).expanduser()
    return path if path.is_absolute() else project_dir / path


def dbt_runner() -> list[str]:
    """The `dbt` command for this target: dbt's own CLI with the local Python-model runner."""
    return [sys.executable, "-m", "profile_enrichment.spark_dbt"]


def session_config(folder: Path) -> dict[str, str]:
    """A local session like the `spark` target's (profiles.yml), on ``folder``'s warehouse and
    metastore: for reading its tables after a run, in a process of its own."""
    return {
        "spark.master": "local[2]",
        "spark.sql.warehouse.dir": str(folder / "warehouse"),
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={folder / 'metastore'}",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "2",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
    }
