{{
    config(
        materialized='incremental',
        unique_key=['identity_key', 'category_id', 'activity_date'],
        incremental_strategy=profile_enrichment.replace_days_strategy(),
        partition_by=profile_enrichment.replace_days_partition_by('activity_date'),
        on_schema_change='fail',
    )
}}
{#- Daily product-category activity per identity: the additive base of category affinity. -#}
{%- set lookback_days = profile_enrichment.validated_int_var('late_arrival_lookback_days', 0, 3650) -%}

with

events as (
    select * from {{ ref('int_events_accepted') }}
    where event_group in ('product_view', 'cart_add', 'purchase')
    {% if is_incremental() %}
        and event_date >= (
            select {{ dbt.dateadd('day', -lookback_days, 'max(activity_date)') }} from {{ this }}
        )
    {% endif %}
),

product_lines as (
    select * from {{ ref('stg_aep__product_list_items') }}
),

lines as (
    select
        events.identity_key,
        events.event_date,
        events.event_group,
        coalesce(product_lines.category_id, 'uncategorized') as category_id,
        product_lines.category_name,
        coalesce(product_lines.quantity, 1) as quantity,
        coalesce(product_lines.line_total, 0) as line_total
    from events
    inner join product_lines
        on events.record_id = product_lines.record_id
),

final as (
    select
        identity_key,
        category_id,
        event_date as activity_date,
        max(category_name) as category_name,
        cast(sum(case when event_group = 'product_view' then 1 else 0 end) as bigint) as product_views,
        cast(sum(case when event_group = 'cart_add' then 1 else 0 end) as bigint) as cart_adds,
        cast(sum(case when event_group = 'purchase' then quantity else 0 end) as bigint) as units_purchased,
        cast(sum(case when event_group = 'purchase' then 1 else 0 end) as bigint) as purchase_lines,
        {{ profile_enrichment.exact_sum("case when event_group = 'purchase' then line_total else 0 end") }}
            as revenue
    from lines
    group by 1, 2, 3
)

select * from final
