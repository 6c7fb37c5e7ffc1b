{{ config(materialized='view') }}
{#-
    Web and commerce events with Query Service style sessions (SESS_TIMEOUT, emulated by
    macros/adf/sess_timeout.sql). Sessions are partitioned by identity AND UTC day, so a session
    never spans midnight: features as of a day never see a session that continues into it, and
    the daily rollup (int_identity_daily_activity) stays additive. Email opens and clicks are not
    visits, so they are left out.
-#}
{%- set timeout_seconds = profile_enrichment.validated_int_var('session_timeout_seconds', 1, 86400) -%}

with

events as (
    select * from {{ ref('int_events_accepted') }}
),

web_events as (
    select * from events
    where event_group not in ('email_open', 'email_click')
),

sessionized as (
    {{ profile_enrichment.sess_timeout(
        'web_events', 'event_at', timeout_seconds,
        partition_by=['identity_key', 'event_date'], tiebreak_by=['event_id']) }}
),

final as (
    select * from sessionized
)

select * from final
