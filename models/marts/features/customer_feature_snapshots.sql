{{
    config(
        materialized='incremental',
        unique_key=['customer_id', 'as_of_date'],
        incremental_strategy='delete+insert',
        on_schema_change='fail',
    )
}}
{#-
    The same features as customer_features, for past as-of dates (int_snapshot_dates), to
    train on. Incremental: a new as-of date is appended; an existing one is recomputed only
    while late-arriving events can still change it (its date is within
    late_arrival_lookback_days of the newest activity), so day-by-day refreshes equal a full one.
-#}
{%- set lookback_days = profile_enrichment.validated_int_var('late_arrival_lookback_days', 0, 3650) -%}

with

snapshot_dates as (
    select as_of_date from {{ ref('int_snapshot_dates') }}
    {% if is_incremental() %}
    where as_of_date not in (select distinct as_of_date from {{ this }})
        or as_of_date > (
            select {{ dbt.dateadd('day', -lookback_days, 'max(activity_date)') }}
            from {{ ref('int_identity_daily_activity') }}
        )
    {% endif %}
),

features as (
    {{ profile_enrichment.customer_features_as_of('snapshot_dates') }}
)

select * from features
