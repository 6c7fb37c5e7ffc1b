{#-
    Pre-hook of int_identity_daily_activity: remember the first day this run rewrites (the
    previous newest day minus var late_arrival_lookback_days; null on a full rebuild), in the
    table int_identity_daily_activity_watermark. customer_feature_snapshots recomputes every
    snapshot date that can see a rewritten day, so late events and missed nights are covered.
-#}
{% macro record_rollup_watermark() -%}
    {%- set lookback_days = profile_enrichment.validated_int_var('late_arrival_lookback_days', 0, 3650) -%}
    {%- set watermark = api.Relation.create(
        database=this.database, schema=this.schema,
        identifier='int_identity_daily_activity_watermark') -%}
    {{ profile_enrichment.replace_table_as(watermark) }}
    {% if is_incremental() -%}
    select cast({{ dbt.dateadd('day', -lookback_days, 'max(activity_date)') }} as date) as rewritten_from_date
    from {{ this }}
    {%- else -%}
    select cast(null as date) as rewritten_from_date
    {%- endif %}
{%- endmacro %}


{#-
    The start of a statement that replaces a table with a query's result. DuckDB replaces it
    atomically; engines without CREATE OR REPLACE TABLE drop it first.
-#}
{% macro replace_table_as(relation) -%}
    {{ return(adapter.dispatch('replace_table_as', 'profile_enrichment')(relation)) }}
{%- endmacro %}

{% macro duckdb__replace_table_as(relation) -%}
    create or replace table {{ relation }} as
{%- endmacro %}

{% macro default__replace_table_as(relation) -%}
    {%- if execute -%}
        {%- do run_query('drop table if exists ' ~ relation) -%}
    {%- endif -%}
    create table {{ relation }} as
{%- endmacro %}

{#- Spark: CREATE OR REPLACE is Delta's; Parquet tables are dropped, then created. -#}
{% macro spark__replace_table_as(relation) -%}
    {%- if execute -%}
        {%- do run_query('drop table if exists ' ~ relation) -%}
    {%- endif -%}
    create table {{ relation }} using parquet as
{%- endmacro %}
