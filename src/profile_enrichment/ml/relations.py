"""What ``dbt.ref()`` returns in a Python model, read the same way on every engine.

dbt-duckdb hands the model a lazy DuckDB relation; dbt-spark a Spark DataFrame (``spark.table``).
The ML layer needs only a few operations on them, each done in the engine before anything
reaches pandas: count the rows, keep a hash sample of whole customers, keep some columns, take
a column's maximum, and turn the result into pandas. ``where`` conditions are SQL that both
engines read the same way (``relation.filter("is_churned is not null")``).

Spark rows become pandas the way DuckDB's ``.df()`` makes them, so the workflows see the same
dtypes on both: decimals as float64, dates as datetime64 (Spark DataFrame -> Arrow -> pandas).
pyspark is never imported here; a Spark DataFrame is recognised by its module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa


def is_spark(relation: Any) -> bool:
    """True for a pyspark DataFrame (classic or Spark Connect)."""
    return type(relation).__module__.startswith("pyspark.")


def column_names(columns: str | Sequence[str] | None) -> list[str] | None:
    """Column names from a list or a comma-separated string ('a, b'); None keeps all."""
    if columns is None:
        return None
    names = columns.split(",") if isinstance(columns, str) else list(columns)
    return [name.strip() for name in names if name.strip()]


def select(relation: Any, columns: str | Sequence[str] | None) -> Any:
    """The relation with only ``columns`` (plain column names)."""
    names = column_names(columns)
    if names is None:
        return relation
    if isinstance(relation, pd.DataFrame):
        return relation[names]
    if is_spark(relation):
        return relation.select(*names)
    return relation.project(", ".join(f'"{name}"' for name in names))


def to_pandas(relation: Any, columns: str | Sequence[str] | None = None) -> pd.DataFrame:
    """The relation's rows as a pandas DataFrame (a DataFrame is returned as it is)."""
    relation = select(relation, columns)
    if isinstance(relation, pd.DataFrame):
        return relation
    if is_spark(relation):
        return _spark_to_pandas(relation)
    # DuckDB: .df() drains the result (.arrow() would leave a reader open; see CONVENTIONS).
    return relation.df()


def row_count(relation: Any) -> int:
    """Number of rows, counted by the engine."""
    if isinstance(relation, pd.DataFrame):
        return len(relation)
    if is_spark(relation):
        return int(relation.count())
    return int(relation.aggregate("count(*)").fetchall()[0][0])


def max_value(relation: Any, column: str) -> Any:
    """The largest value of ``column`` (None when there are no rows), computed by the engine."""
    if isinstance(relation, pd.DataFrame):
        value = relation[column].max() if len(relation) else None
        return None if value is None or pd.isna(value) else value
    if is_spark(relation):
        return relation.selectExpr(f"max(`{column}`)").first()[0]
    return relation.aggregate(f'max("{column}")').fetchall()[0][0]


def where(relation: Any, condition: str) -> Any:
    """Rows where the SQL ``condition`` holds (same text on DuckDB and Spark)."""
    return relation.filter(condition)


def empty(relation: Any) -> Any:
    """The relation with its columns and no rows."""
    if isinstance(relation, pd.DataFrame):
        return relation.iloc[0:0]
    return relation.limit(0)


def hash_sample(relation: Any, key: str, per_million: int) -> Any:
    """Rows whose ``key`` hashes into the first ``per_million`` of a million buckets: the same
    key always falls on the same side, so all rows of a customer are kept or dropped together.
    (DuckDB's hash and Spark's xxhash64 differ, so the engines keep different customers.)"""
    if is_spark(relation):
        return relation.filter(f"pmod(xxhash64(`{key}`), 1000000) < {int(per_million)}")
    return relation.filter(f'hash("{key}") % 1000000 < {int(per_million)}')


def _spark_to_pandas(frame: Any) -> pd.DataFrame:
    """Spark DataFrame -> Arrow -> pandas, with DuckDB .df()'s types: decimals as float64 (cast
    in Spark), dates as datetime64, timestamps naive UTC. toArrow (Spark 4) skips pyspark's own
    pandas layer (which does not support pandas 3 yet)."""
    decimal_columns = {
        field.name for field in frame.schema.fields if field.dataType.typeName() == "decimal"
    }
    if decimal_columns:
        frame = frame.selectExpr(
            *(
                f"cast(`{name}` as double) as `{name}`" if name in decimal_columns else f"`{name}`"
                for name in frame.columns
            )
        )
    table = frame.toArrow()
    result = table.to_pandas(date_as_object=False)
    for field, column in zip(table.schema, table.columns, strict=True):
        name, kind = field.name, field.type
        if pa.types.is_timestamp(kind) and kind.tz is not None:
            # Spark's TIMESTAMP is zone-aware (UTC in this project's sessions); DuckDB's .df()
            # gives naive UTC timestamps for the models' `timestamp` columns.
            result[name] = result[name].dt.tz_convert("UTC").dt.tz_localize(None)
        elif pa.types.is_date(kind):
            result[name] = result[name].astype("datetime64[us]")  # Arrow gives [ms]
        elif column.null_count and (pa.types.is_integer(kind) or pa.types.is_boolean(kind)):
            # With nulls, DuckDB's .df() keeps the type (Int64, boolean); Arrow would give
            # float64 / object. Same dtypes => the same training-data fingerprint, hence the
            # same model_version on both engines (ml/registry.py).
            result[name] = column.to_pandas(types_mapper=_NULLABLE_PANDAS.get)
    return result


_NULLABLE_PANDAS = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}
