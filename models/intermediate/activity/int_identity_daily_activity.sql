{{
    config(
        materialized='incremental',
        unique_key=['identity_key', 'activity_date'],
        incremental_strategy=profile_enrichment.replace_days_strategy(),
        partition_by=profile_enrichment.replace_days_partition_by('activity_date'),
        on_schema_change='fail',
        pre_hook="{{ profile_enrichment.record_rollup_watermark() }}",
    )
}}
{#-
    The daily rollup every feature is computed from: one row per identity and day with
    activity. It is additive across days, so features for any as-of date and window are sums
    over it, and a nightly refresh only recomputes new days plus a late-arrival lookback.

    Sessions come from int_events_sessionized (sess_timeout partitioned by identity AND day): a
    session never spans midnight (UTC). That keeps each session inside one day, so "as of D"
    never sees a session that continues on or after D, and the rollup stays exactly additive.
-#}
{%- set lookback_days = profile_enrichment.validated_int_var('late_arrival_lookback_days', 0, 3650) -%}

with

events as (
    select * from {{ ref('int_events_accepted') }}
    {% if is_incremental() %}
    where event_date >= (
        select {{ dbt.dateadd('day', -lookback_days, 'max(activity_date)') }} from {{ this }}
    )
    {% endif %}
),

sessionized as (
    select * from {{ ref('int_events_sessionized') }}
    {% if is_incremental() %}
    where event_date >= (
        select {{ dbt.dateadd('day', -lookback_days, 'max(activity_date)') }} from {{ this }}
    )
    {% endif %}
),

sessions as (
    select
        identity_key,
        event_date,
        session_num,
        count(*) as session_events,
        {{ profile_enrichment.exact_sum('case when session_is_new then 0 else session_timestamp_diff end', 3) }}
            as session_seconds
    from sessionized
    group by 1, 2, 3
),

session_days as (
    select
        identity_key,
        event_date as activity_date,
        cast(count(*) as bigint) as sessions,
        cast(sum(session_events) as bigint) as session_events,
        {{ profile_enrichment.exact_sum('session_seconds', 3) }} as session_seconds,
        cast(sum(case when session_events = 1 then 1 else 0 end) as bigint) as bounced_sessions
    from sessions
    group by 1, 2
),

event_days as (
    select
        identity_key,
        event_date as activity_date,
        cast(count(*) as bigint) as events,
        cast(sum(case when event_group = 'page_view' then 1 else 0 end) as bigint) as page_views,
        cast(sum(case when event_group = 'product_view' then 1 else 0 end) as bigint) as product_views,
        cast(sum(case when event_group = 'cart_add' then 1 else 0 end) as bigint) as cart_adds,
        cast(sum(case when event_group = 'checkout' then 1 else 0 end) as bigint) as checkouts,
        cast(count(distinct order_id) as bigint) as orders,
        coalesce({{ profile_enrichment.exact_sum('revenue') }}, 0) as revenue,
        cast(sum(case when event_group = 'email_open' then 1 else 0 end) as bigint) as email_opens,
        cast(sum(case when event_group = 'email_click' then 1 else 0 end) as bigint) as email_clicks,
        cast(sum(case
            when event_group in ('page_view', 'product_view', 'cart_add', 'checkout')
                then 1
            else 0
        end) as bigint) as web_events
    from events
    group by 1, 2
),

final as (
    select
        event_days.identity_key,
        event_days.activity_date,
        event_days.events,
        event_days.page_views,
        event_days.product_views,
        event_days.cart_adds,
        event_days.checkouts,
        event_days.orders,
        event_days.revenue,
        event_days.email_opens,
        event_days.email_clicks,
        event_days.web_events,
        coalesce(session_days.sessions, 0) as sessions,
        coalesce(session_days.session_events, 0) as session_events,
        coalesce(session_days.session_seconds, 0) as session_seconds,
        coalesce(session_days.bounced_sessions, 0) as bounced_sessions
    from event_days
    left join session_days
        on
            event_days.identity_key = session_days.identity_key
            and event_days.activity_date = session_days.activity_date
)

select * from final
