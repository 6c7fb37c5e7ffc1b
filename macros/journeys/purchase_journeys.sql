{#-
    int_purchase_journeys' SQL, and how DuckDB builds it in identity buckets.

    Every column is a window over one identity's whole accepted event stream (partition
    identity_key). In one query at 92.9M events, this and int_identity_daily_activity side by
    side spilled more than the 43 GB the disk had free: each window sorts every accepted event.
    No identity's rows depend on another identity's, so on DuckDB (where events_by_file()) the
    model's own query selects nothing and the post-hook build_journeys_in_buckets computes the
    identities to (re)build, splits them by hash(identity_key) into buckets of about var
    journey_rows_per_bucket accepted events, and for each bucket deletes its identities' rows
    and inserts them again, inside the model's transaction. Each identity is still computed over
    its whole history, so the rows equal the one-query rows. PostgreSQL and Spark run the one
    query.
-#}

{#- The journeys of the accepted events matching `events_condition` (SQL on the accepted
    stream's columns; it must select whole identities, e.g. a condition on identity_key). -#}
{% macro purchase_journeys(events_condition) -%}
{%- set attribution_timeout_seconds = 7 * 86400 -%}
{%- set partition_by = ['identity_key'] -%}
{%- set order_by = ['event_at', 'event_id'] -%}
with

events as (
    select * from {{ ref('int_events_accepted') }}
    where {{ events_condition }}
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
{%- endmacro %}


{#- The first event date a nightly run recomputes identities from: the newest purchase date in
    the table minus var late_arrival_lookback_days (1900-01-01 when the table is empty). -#}
{% macro journeys_cutoff_date() -%}
{%- set lookback_days = profile_enrichment.validated_int_var('late_arrival_lookback_days', 0, 3650) -%}
coalesce(
    (
        select {{ dbt.dateadd('day', -lookback_days, 'max(cast(journeys.event_at as date))') }}
        from {{ this }} as journeys
    ),
    cast('1900-01-01' as date)
)
{%- endmacro %}


{#- The identity_key of every accepted event on or after `cutoff_date` (SQL for a date). -#}
{% macro journeys_changed_identities(cutoff_date) -%}
select changed.identity_key
from {{ ref('int_events_accepted') }} as changed
where changed.event_date >= {{ cutoff_date }}
{%- endmacro %}


{#- The identities with an accepted event on or after `cutoff_date` (SQL for a date). -#}
{% macro journeys_identities_since(cutoff_date) -%}
identity_key in (
    {{ profile_enrichment.journeys_changed_identities(cutoff_date) }}
)
{%- endmacro %}


{#-
    Post-hook of int_purchase_journeys where events_by_file() (DuckDB). The model's own query
    added no row, so the table holds what the last run left: nothing on a full build (every
    identity is built), else the identities since journeys_cutoff_date() are rebuilt. Renders
    no SQL.
-#}
{% macro build_journeys_in_buckets() -%}
    {%- if execute and profile_enrichment.events_by_file() -%}
        {%- set accepted = ref('int_events_accepted') -%}
        {%- set per_bucket = profile_enrichment.validated_int_var('journey_rows_per_bucket', 1, 1000000000) -%}
        {%- set is_empty = run_query('select count(*) = 0 from ' ~ this).columns[0].values()[0] -%}
        {%- set changed = this.identifier ~ '__identities' -%}
        {%- if is_empty -%}
            {%- set wanted = 'true' -%}
            {%- set rows = run_query('select count(*) from ' ~ accepted).columns[0].values()[0] -%}
        {%- else -%}
            {#- Fixed before any delete: deleting rows would move the newest purchase date. -#}
            {%- do run_query(
                'create or replace temporary table ' ~ changed ~ ' as select distinct identity_key from ('
                ~ profile_enrichment.journeys_changed_identities(
                    profile_enrichment.journeys_cutoff_date()) ~ ') as since_cutoff') -%}
            {%- set wanted = 'identity_key in (select identity_key from ' ~ changed ~ ')' -%}
            {%- set rows = run_query(
                'select count(*) from ' ~ accepted ~ ' where ' ~ wanted).columns[0].values()[0] -%}
        {%- endif -%}
        {%- set buckets = [1, ((rows + per_bucket - 1) // per_bucket) | int] | max -%}
        {%- for bucket in range(buckets) -%}
            {%- set condition = wanted if buckets == 1
                else '(' ~ wanted ~ ') and hash(identity_key) % ' ~ buckets ~ ' = ' ~ bucket -%}
            {%- if not is_empty -%}
                {%- do run_query('delete from ' ~ this ~ ' where ' ~ condition) -%}
            {%- endif -%}
            {%- do run_query(
                'insert into ' ~ this ~ ' by name ' ~ profile_enrichment.purchase_journeys(condition)) -%}
        {%- endfor -%}
        {%- if not is_empty -%}
            {%- do run_query('drop table ' ~ changed) -%}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
