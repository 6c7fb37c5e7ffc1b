{{
    config(
        materialized='incremental',
        unique_key='as_of_date',
        incremental_strategy=profile_enrichment.replace_days_strategy(),
        partition_by=profile_enrichment.replace_days_partition_by('as_of_date'),
        on_schema_change='fail',
    )
}}
{#-
    The same features as customer_features, for past as-of dates (int_snapshot_dates), to
    train on. Incremental: a new as-of date is appended; an existing one is recomputed, whole
    (unique_key is the date, so rows of customers re-stitched since are replaced too), when it
    can see a day the daily rollup rewrote in this run (int_identity_daily_activity_watermark).
    So day-by-day refreshes, late events and missed nights all equal a full refresh.
-#}
{#- Written by the rollup's pre-hook: the first day it rewrites in this run (null = all). -#}
{%- set watermark = adapter.get_relation(this.database, this.schema, 'int_identity_daily_activity_watermark') if execute else none -%}

with

snapshot_dates as (
    select as_of_date from {{ ref('int_snapshot_dates') }}
    {% if is_incremental() %}
    where as_of_date not in (select distinct as_of_date from {{ this }})
        -- a snapshot that can see a day the rollup rewrote in this run is recomputed whole
        {%- if watermark is not none %}
        or as_of_date > (
            select coalesce(min(rewritten_from_date), cast('1900-01-01' as date))
            from {{ watermark }}
        )
        {%- else %}
        or true
        {%- endif %}
    {% endif %}
),

features as (
    {{ profile_enrichment.customer_features_as_of('snapshot_dates') }}
)

select * from features
