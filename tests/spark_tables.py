"""Write every table of a local Spark warehouse to Parquet, for tests/engine_compare.py.

    python tests/spark_tables.py SPARK_DIR SCHEMA OUT_DIR

Runs in a process of its own: the Derby metastore is embedded (one JVM at a time), and a
JVM that pyspark has started keeps its first session's metastore location. SPARK_DIR is the
target's PE_SPARK_DIR (warehouse/, metastore/). Views are skipped (they hold no rows of their
own). VARIANT columns (the parsed XDM event) are written as their JSON text, which the
comparison parses, since Arrow has no VARIANT type.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(spark_dir: str, schema: str, out_dir: str) -> int:
    import pyarrow.parquet as pq

    from profile_enrichment import spark_dbt
    from profile_enrichment.engines.local_spark import session_config

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spark = spark_dbt.spark_session(session_config(Path(spark_dir)))
    spark.sparkContext.setLogLevel("ERROR")
    try:
        for table in spark.catalog.listTables(schema):
            if table.tableType == "VIEW":
                continue
            frame = spark.table(f"{schema}.{table.name}")
            frame = frame.selectExpr(
                *(
                    f"to_json(`{f.name}`) as `{f.name}`"
                    if f.dataType.typeName() == "variant"
                    else f"`{f.name}`"
                    for f in frame.schema.fields
                )
            )
            pq.write_table(frame.toArrow(), out / f"{table.name}.parquet")
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
