{#-
    Pre-hook of int_identity_daily_activity: remember the first day this run rewrites (the
    previous newest day minus var late_arrival_lookback_days; null on a full rebuild), in the
    table int_identity_daily_activity_watermark. customer_feature_snapshots recomputes every
    snapshot date that can see a rewritten day, so late events and missed nights are covered.
-#}
{% macro record_rollup_watermark() -%}
    {{ return(adapter.dispatch('record_rollup_watermark', 'profile_enrichment')()) }}
{%- endmacro %}

{% macro default__record_rollup_watermark() -%}
    {%- set lookback_days = profile_enrichment.validated_int_var('late_arrival_lookback_days', 0, 3650) -%}
    {%- set watermark = api.Relation.create(
        database=this.database, schema=this.schema,
        identifier='int_identity_daily_activity_watermark') -%}
    create or replace table {{ watermark }} as
    {% if is_incremental() -%}
    select cast({{ dbt.dateadd('day', -lookback_days, 'max(activity_date)') }} as date) as rewritten_from_date
    from {{ this }}
    {%- else -%}
    select cast(null as date) as rewritten_from_date
    {%- endif %}
{%- endmacro %}

{#- Spark: Parquet tables cannot be replaced in one statement (create or replace is Delta's). -#}
{% macro spark__record_rollup_watermark() -%}
    {%- set lookback_days = profile_enrichment.validated_int_var('late_arrival_lookback_days', 0, 3650) -%}
    {%- set watermark = api.Relation.create(
        schema=this.schema, identifier='int_identity_daily_activity_watermark') -%}
    {%- if execute -%}
        {%- do run_query('drop table if exists ' ~ watermark) -%}
    {%- endif %}
    create table {{ watermark }} using parquet as
    {% if is_incremental() -%}
    select cast({{ dbt.dateadd('day', -lookback_days, 'max(activity_date)') }} as date) as rewritten_from_date
    from {{ this }}
    {%- else -%}
    select cast(null as date) as rewritten_from_date
    {%- endif %}
{%- endmacro %}
