"""Load raw XDM files into an engine whose dbt adapter cannot read files in place.

On DuckDB the sources read the files directly (``external_location`` in
models/staging/aep/_aep__sources.yml). PostgreSQL cannot, so ``profile-enrichment load-raw``
puts the same rows into ``aep.experience_events`` and ``aep.profiles``: one row per record
with ``source_file``, ``source_row`` and ``raw_json`` (text), and dbt transforms them from
there. The files are read with DuckDB's readers and the very SQL of the DuckDB source, so
both engines see byte-identical records (the cross-engine test checks this).

``raw_json`` stays text, not ``jsonb``: a malformed record must reach staging, which
quarantines it as ``invalid_json``; a jsonb column would refuse the whole load instead.
Staging parses it into ``jsonb`` (``postgres__xdm_parse_json``).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv

from profile_enrichment.errors import UserError
from profile_enrichment.project import RawInput

# The DuckDB source's SELECTs (models/staging/aep/_aep__sources.yml), with the folder as a
# parameter. Keep the two in step: test_engines compares every record on both engines.
_JSONL = (
    "select files.filename as source_file,"
    " cast(unnest(range(1, len(string_split(files.content, chr(10))) + 1)) as bigint) as source_row,"
    " ltrim(rtrim(unnest(string_split(files.content, chr(10))), chr(13)), chr(65279)) as raw_json"
    " from read_text($glob) as files"
)
_PARQUET = (
    "select records.filename as source_file,"
    " cast(records.file_row_number + 1 as bigint) as source_row,"
    " cast(to_json(records) as varchar) as raw_json"
    " from read_parquet($glob, filename = true, file_row_number = true, union_by_name = true)"
    " as records"
)
RAW_TABLES = ("experience_events", "profiles")


@dataclass(frozen=True)
class PostgresConnection:
    """Where to load: the same PE_PG_* variables that profiles.yml reads."""

    host: str
    port: int
    user: str
    password: str
    dbname: str

    @classmethod
    def from_env(cls) -> PostgresConnection:
        port = os.environ.get("PE_PG_PORT", "5432")
        if not port.isdigit():
            raise UserError(f"PE_PG_PORT must be a port number, got {port!r}")
        return cls(
            host=os.environ.get("PE_PG_HOST", "127.0.0.1"),
            port=int(port),
            user=os.environ.get("PE_PG_USER", "postgres"),
            password=os.environ.get("PE_PG_PASSWORD", ""),
            dbname=os.environ.get("PE_PG_DBNAME", "profile_enrichment"),
        )


def raw_records(raw: RawInput, table: str) -> pa.Table:
    """Every record of one source table, as the DuckDB source presents it."""
    folder = {"experience_events": "events", "profiles": "profiles"}[table]
    pattern = "*.parquet" if raw.format == "parquet" else "*.json*"
    if table == "profiles" and not raw.has_profiles:
        return pa.table(
            {
                "source_file": pa.array([], pa.string()),
                "source_row": pa.array([], pa.int64()),
                "raw_json": pa.array([], pa.string()),
            }
        )
    sql = _PARQUET if raw.format == "parquet" else _JSONL
    with duckdb.connect() as con:
        return con.sql(sql, params={"glob": f"{raw.root}/{folder}/{pattern}"}).to_arrow_table()


@contextlib.contextmanager
def _transaction(connection: PostgresConnection, what: str) -> Iterator[Any]:
    """A cursor in one transaction; driver errors become one clear line (nothing changed)."""
    try:
        import psycopg2
    except ImportError as err:
        raise UserError(
            "the postgres target needs dbt-postgres",
            hint="pip install -e '.[postgres]' (make test-engines does this)",
        ) from err
    try:
        conn = psycopg2.connect(
            host=connection.host,
            port=connection.port,
            user=connection.user,
            password=connection.password,
            dbname=connection.dbname,
            connect_timeout=10,
        )
    except psycopg2.OperationalError as err:
        raise UserError(
            f"cannot connect to PostgreSQL at {connection.host}:{connection.port}: {_first_line(err)}",
            hint="check PE_PG_HOST, PE_PG_PORT, PE_PG_USER, PE_PG_PASSWORD and PE_PG_DBNAME",
        ) from err
    try:
        with conn, conn.cursor() as cursor:
            yield cursor
    except psycopg2.Error as err:
        raise UserError(
            f"{what} failed: {_first_line(err)}",
            hint="nothing was changed (one transaction); check the server's log",
        ) from err
    finally:
        conn.close()


def _replace_rows(cursor: Any, schema: str, table: str, columns: str, rows: pa.Table) -> None:
    """Create the table when missing, then replace its rows (truncate + COPY). Truncate, not
    drop: dbt's views over it depend on the table."""
    cursor.execute(f'create schema if not exists "{schema}"')
    cursor.execute(f'create table if not exists "{schema}"."{table}" ({columns})')
    cursor.execute(f'truncate table "{schema}"."{table}"')
    buffer = io.BytesIO()
    pa_csv.write_csv(
        rows, buffer, pa_csv.WriteOptions(include_header=False, quoting_style="all_valid")
    )
    buffer.seek(0)
    cursor.copy_expert(f'copy "{schema}"."{table}" from stdin with (format csv)', buffer)


def load_postgres(raw: RawInput, connection: PostgresConnection, schema: str = "aep") -> dict:
    """Replace the rows of ``<schema>.experience_events`` and ``<schema>.profiles`` in one
    transaction. Returns {table: rows loaded}. Readers never see a half-loaded table."""
    loaded = {}
    with _transaction(connection, "loading the raw files into PostgreSQL") as cursor:
        for table in RAW_TABLES:
            records = raw_records(raw, table)
            columns = "source_file text not null, source_row bigint not null, raw_json text"
            _replace_rows(cursor, schema, table, columns, records)
            loaded[table] = records.num_rows
    return loaded


def load_compiled_scoring(
    artifacts_dir: Path, connection: PostgresConnection, schema: str
) -> list[tuple[str, str]]:
    """Write the registry's propensity champions, compiled to PostgreSQL SQL, as
    ``<schema>.ml_scoring_sql``: the table the dbt Python model of that name writes where
    Python runs. Returns [(model_name, model_version)]; empty when nothing was trained yet."""
    from profile_enrichment.ml.registry import ModelRegistry
    from profile_enrichment.ml.workflows import COMPILED_SCORING_COLUMNS, compiled_champions

    registry = ModelRegistry(artifacts_dir)
    frame = compiled_champions(registry, artifacts_dir, dialects=("postgres",))
    rows = pa.Table.from_pandas(frame, preserve_index=False)
    columns = ", ".join(f"{name} text" for name in COMPILED_SCORING_COLUMNS)
    with _transaction(connection, "loading the compiled scorers into PostgreSQL") as cursor:
        _replace_rows(cursor, schema, "ml_scoring_sql", columns, rows)
    return list(zip(frame["model_name"], frame["model_version"], strict=True))


def _first_line(err: Exception) -> str:
    """The driver's message without its multi-line context (one line for the user)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
