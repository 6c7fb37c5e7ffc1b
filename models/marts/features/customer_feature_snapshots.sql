{{
    config(
        materialized='incremental',
        unique_key='as_of_date',
        incremental_strategy=profile_enrichment.replace_days_strategy(),
        partition_by=profile_enrichment.replace_days_partition_by('as_of_date'),
        on_schema_change='fail',
        post_hook="{{ profile_enrichment.build_snapshots_date_by_date() }}",
    )
}}
{#-
    The same features as customer_features, for past as-of dates (int_snapshot_dates), to
    train on. Incremental: a new as-of date is appended; an existing one is recomputed, whole
    (unique_key is the date, so rows of customers re-stitched since are replaced too), when it
    can see a day the daily rollup rewrote in this run (int_identity_daily_activity_watermark).
    So day-by-day refreshes, late events and missed nights all equal a full refresh.
    Which dates, and one statement per date on DuckDB: macros/features/snapshot_dates.sql.
-#}

with

snapshot_dates as (
    {%- if profile_enrichment.snapshots_date_by_date() %}
    -- DuckDB: the post-hook build_snapshots_date_by_date builds the dates one by one
    select as_of_date from {{ ref('int_snapshot_dates') }}
    where false
    {%- else %}
    {{ profile_enrichment.pending_snapshot_dates() }}
    {%- endif %}
),

features as (
    {{ profile_enrichment.customer_features_as_of('snapshot_dates') }}
)

select * from features
