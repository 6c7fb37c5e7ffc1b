{{
    config(
        materialized=profile_enrichment.keyed_incremental_materialization(),
        unique_key='event_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        full_refresh=profile_enrichment.staging_full_refresh(),
    )
}}
{#-
    One row per accepted purchase, with the path around it and the touches credited for it,
    computed with emulated Query Service ADFs (macros/adf/) over each identity's whole event
    stream, ordered by event_at then event_id:

      PREVIOUS / NEXT                 previous and next purchase, the page just before it
      TIME_BETWEEN_PREVIOUS_MATCH     seconds since the last email click
      TIME_BETWEEN_NEXT_MATCH         hours until the next email click (negative, as in Adobe)
      ATTRIBUTION_FIRST/LAST_TOUCH    first and last marketing touch, with and without a 7-day
                                      expiry (_EXP_TIMEOUT)

    Touches: an email click is an 'email' touch and a page view a 'web' touch; every other event
    is not a touch. Identities are not stitched here (identity_key is the event's own identity).

    Incremental (DuckDB, PostgreSQL): a purchase's row depends on its identity's whole stream,
    before and after it (the next purchase, the next e-mail click), so a nightly run recomputes
    every identity with an accepted event on or after the newest purchase date already in the
    table minus var late_arrival_lookback_days, over that identity's whole history, and replaces
    those identities' rows by event_id. Later-arriving events older than that are the same late
    data the daily rollups do not re-read either; a full refresh picks them up. When staging is
    rebuilt because a raw file changed (var rebuild_staging), the journeys are rebuilt too: a
    changed history can remove purchases, and delete+insert would keep their rows.
-#}
{%- set attribution_timeout_seconds = 7 * 86400 -%}
{%- set partition_by = ['identity_key'] -%}
{%- set order_by = ['event_at', 'event_id'] -%}
{%- set lookback_days = profile_enrichment.validated_int_var('late_arrival_lookback_days', 0, 3650) -%}

with

events as (
    select * from {{ ref('int_events_accepted') }}
    {%- if is_incremental() %}
    where identity_key in (
        select changed.identity_key
        from {{ ref('int_events_accepted') }} as changed
        where changed.event_date >= coalesce(
            (
                select {{ dbt.dateadd('day', -lookback_days, 'max(cast(journeys.event_at as date))') }}
                from {{ this }} as journeys
            ),
            cast('1900-01-01' as date)
        )
    )
    {%- endif %}
),

journey_events as (
    select
        event_id,
        identity_key,
        event_group,
        event_at,
        revenue,
        currency_code,
        page_name,
        case when event_group = 'purchase' then event_at end as purchase_at,
        case event_group
            when 'email_click' then 'email'
            when 'page_view' then 'web'
        end as touch_channel
    from events
),

pathed as (
    select
        journey_events.*,
        {{ profile_enrichment.adf_previous(
            'purchase_at', 1, ignore_nulls=true, partition_by=partition_by, order_by=order_by) }}
            as previous_purchase_at,
        {{ profile_enrichment.adf_previous(
            'purchase_at', 2, ignore_nulls=true, partition_by=partition_by, order_by=order_by) }}
            as second_previous_purchase_at,
        {{ profile_enrichment.adf_next(
            'purchase_at', 1, ignore_nulls=true, partition_by=partition_by, order_by=order_by) }}
            as next_purchase_at,
        {{ profile_enrichment.adf_previous(
            'page_name', 1, partition_by=partition_by, order_by=order_by) }}
            as previous_page_name,
        {{ profile_enrichment.adf_time_between_previous_match(
            'event_at', "event_group = 'email_click'", 'seconds',
            partition_by=partition_by, tiebreak_by=['event_id']) }}
            as seconds_since_previous_email_click,
        {{ profile_enrichment.adf_time_between_next_match(
            'event_at', "event_group = 'email_click'", 'hours',
            partition_by=partition_by, tiebreak_by=['event_id']) }}
            as hours_until_next_email_click
    from journey_events
),

attribution_rows as (
    -- Only touches can be credited and only purchases are kept, so the attribution windows
    -- need no other rows (the path columns above saw them all). Each attribution step sorts
    -- its input: on 381,794 events this halves the rows they sort (190,800 left).
    select * from pathed
    where event_group = 'purchase' or touch_channel is not null
),

first_touched as (
    {{ profile_enrichment.adf_attribution_first_touch(
        'attribution_rows', 'event_at', 'channel', 'touch_channel',
        partition_by=partition_by, tiebreak_by=['event_id']) }}
),

last_touched as (
    {{ profile_enrichment.adf_attribution_last_touch(
        'first_touched', 'event_at', 'channel', 'touch_channel',
        partition_by=partition_by, tiebreak_by=['event_id']) }}
),

first_touched_in_timeout as (
    {{ profile_enrichment.adf_attribution_first_touch_exp_timeout(
        'last_touched', 'event_at', 'channel', 'touch_channel', attribution_timeout_seconds,
        partition_by=partition_by, tiebreak_by=['event_id']) }}
),

last_touched_in_timeout as (
    {{ profile_enrichment.adf_attribution_last_touch_exp_timeout(
        'first_touched_in_timeout', 'event_at', 'channel', 'touch_channel', attribution_timeout_seconds,
        partition_by=partition_by, tiebreak_by=['event_id']) }}
),

final as (
    select
        event_id,
        identity_key,
        event_at,
        revenue,
        currency_code,
        previous_purchase_at,
        second_previous_purchase_at,
        next_purchase_at,
        previous_page_name,
        seconds_since_previous_email_click,
        hours_until_next_email_click,
        first_touch_value as first_touch_channel,
        first_touch_timestamp as first_touch_at,
        last_touch_value as last_touch_channel,
        last_touch_timestamp as last_touch_at,
        first_touch_exp_timeout_value as first_touch_channel_exp_timeout,
        first_touch_exp_timeout_timestamp as first_touch_exp_timeout_at,
        last_touch_exp_timeout_value as last_touch_channel_exp_timeout,
        last_touch_exp_timeout_timestamp as last_touch_exp_timeout_at
    from last_touched_in_timeout
    where event_group = 'purchase'
)

select * from final
