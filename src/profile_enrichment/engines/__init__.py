"""Engines other than the embedded DuckDB: loading raw XDM files where dbt cannot read them."""
