{#-
    The incremental models that recompute whole days (a late-arrival lookback, or one as-of
    date) replace those days in the table. DuckDB and Postgres: delete+insert on the model's
    unique_key. Spark on Parquet has no delete or merge: the table is partitioned by the day
    column and insert_overwrite replaces exactly the day partitions that the run recomputed
    (dbt-spark switches partitionOverwriteMode to dynamic). Use in config():
        incremental_strategy=profile_enrichment.replace_days_strategy(),
        partition_by=profile_enrichment.replace_days_partition_by('activity_date'),
-#}
{% macro replace_days_strategy() -%}
    {{ return(adapter.dispatch('replace_days_strategy', 'profile_enrichment')()) }}
{%- endmacro %}

{% macro default__replace_days_strategy() -%}
    {{ return('delete+insert') }}
{%- endmacro %}

{% macro spark__replace_days_strategy() -%}
    {{ return('insert_overwrite') }}
{%- endmacro %}


{% macro replace_days_partition_by(day_column) -%}
    {{ return(adapter.dispatch('replace_days_partition_by', 'profile_enrichment')(day_column)) }}
{%- endmacro %}

{% macro default__replace_days_partition_by(day_column) -%}
    {{ return(none) }}
{%- endmacro %}

{% macro spark__replace_days_partition_by(day_column) -%}
    {{ return([day_column]) }}
{%- endmacro %}


{#-
    Models that recompute whole entities (every row of an identity whose events changed) and
    replace them by key: 'incremental' with delete+insert where dbt can delete (DuckDB,
    PostgreSQL); on Spark, whose Parquet tables cannot delete, a table rebuilt each run.
-#}
{% macro keyed_incremental_materialization() -%}
    {{ return(adapter.dispatch('keyed_incremental_materialization', 'profile_enrichment')()) }}
{%- endmacro %}

{% macro default__keyed_incremental_materialization() -%}
    {{ return('incremental') }}
{%- endmacro %}

{% macro spark__keyed_incremental_materialization() -%}
    {{ return('table') }}
{%- endmacro %}
