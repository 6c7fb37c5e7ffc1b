{#-
    Every customer feature as of each date in `as_of_dates` (a relation or CTE with column
    as_of_date). Used by customer_features (the run's as-of date) and by
    customer_feature_snapshots (monthly past dates), so both are the same definition.

    Point in time: everything comes from activity_before(), which only sees days strictly
    before the as-of date. Customers with events but no purchase still get a row; purchase
    features are then null (recency) or 0 (counts).
-#}
{% macro customer_features_as_of(as_of_dates) -%}
{%- set recent_days = profile_enrichment.validated_int_var('recent_purchase_window_days', 1, 3650) -%}
{%- set day_measures = [] -%}
{%- for measure in ['orders', 'web_events', 'sessions', 'session_events', 'bounced_sessions']
    + profile_enrichment.windowed_measures() + profile_enrichment.trend_measures() -%}
    {%- if measure not in day_measures and measure not in ['revenue', 'session_seconds'] -%}
        {%- do day_measures.append(measure) -%}
    {%- endif -%}
{%- endfor -%}
with

visible_activity as (
    {{ profile_enrichment.activity_before(as_of_dates, ref('int_identity_daily_activity')) }}
),

visible_days as (
    -- One row per (customer, as-of date, day). A customer stitched from several identities has
    -- one row per identity and day above; summing them first makes every day count a plain
    -- count. With count(distinct ...) instead, DuckDB planned one aggregate per distinct
    -- expression, joined back together (7 aggregates, 6 joins), and this model ran out of
    -- memory at 20M events. Sums stay exact: decimals here, as exact_sum() does per row.
    select
        customer_id,
        as_of_date,
        activity_date,
        {%- for measure in day_measures %}
        cast(sum({{ measure }}) as bigint) as {{ measure }},
        {%- endfor %}
        sum(cast(revenue as decimal(38, 6))) as revenue,
        sum(cast(session_seconds as decimal(38, 3))) as session_seconds
    from visible_activity
    group by 1, 2, 3
),

per_customer as (
    select
        -- typed as the contract says: PostgreSQL would call the computed text `text`, and an
        -- incremental run then sees a schema change against the contracted `varchar`
        cast(customer_id as {{ profile_enrichment.type_varchar() }}) as customer_id,
        as_of_date,
        min(activity_date) as first_activity_date,
        max(activity_date) as last_activity_date,
        max(case when web_events > 0 then activity_date end) as last_visit_date,
        min(case when orders > 0 then activity_date end) as first_purchase_date,
        max(case when orders > 0 then activity_date end) as last_purchase_date,
        cast(sum(orders) as bigint) as orders_total,
        cast(count(case when orders > 0 then activity_date end) as bigint) as purchase_days_total,
        {{ profile_enrichment.exact_sum('revenue') }} as revenue_total,
        cast(count(*) as bigint) as active_days_total,
        cast(sum(sessions) as bigint) as sessions_total,
        cast(sum(session_events) as bigint) as session_events_total,
        {{ profile_enrichment.exact_sum('session_seconds', 3) }} as session_seconds_total,
        cast(sum(bounced_sessions) as bigint) as bounced_sessions_total,
        {{ profile_enrichment.windowed_sums() }}
        cast(coalesce(sum(case when {{ profile_enrichment.in_window(recent_days) }}
            then orders end), 0) as bigint) as orders_in_recent_window
    from visible_days
    group by 1, 2
),

first_purchase_day as (
    select
        visible_days.customer_id,
        visible_days.as_of_date,
        {{ profile_enrichment.exact_sum('visible_days.revenue') }} as first_purchase_day_revenue
    from visible_days
    inner join per_customer
        on visible_days.customer_id = per_customer.customer_id
        and visible_days.as_of_date = per_customer.as_of_date
        and visible_days.activity_date = per_customer.first_purchase_date
    group by 1, 2
),

derived as (
    -- Day counts are bigint on every engine (the contract's type, days_between): Spark's
    -- and PostgreSQL's date differences are 32-bit.
    select
        per_customer.*,
        {{ profile_enrichment.days_between('per_customer.last_purchase_date', 'per_customer.as_of_date') }}
            as recency_days,
        {{ profile_enrichment.days_between('per_customer.first_activity_date', 'per_customer.as_of_date') }}
            as tenure_days,
        {{ profile_enrichment.days_between('per_customer.first_purchase_date', 'per_customer.as_of_date') }}
            as customer_tenure_days,
        {{ profile_enrichment.days_between('per_customer.last_visit_date', 'per_customer.as_of_date') }}
            as days_since_last_visit,
        case when per_customer.orders_total > 0
            then per_customer.revenue_total / per_customer.orders_total end as average_order_value,
        case when per_customer.sessions_total > 0
            then cast(per_customer.session_events_total as {{ profile_enrichment.type_double() }}) / per_customer.sessions_total
        end as average_session_depth,
        case when per_customer.sessions_total > 0
            then per_customer.session_seconds_total / per_customer.sessions_total
        end as average_session_seconds,
        case when per_customer.sessions_total > 0
            then cast(per_customer.bounced_sessions_total as {{ profile_enrichment.type_double() }}) / per_customer.sessions_total
        end as bounce_rate,
        -- BG/NBD inputs (Fader, Hardie & Lee 2005): repeat purchases counted as distinct
        -- purchase days, time in days, measured from the first purchase.
        case when per_customer.purchase_days_total > 0
            then per_customer.purchase_days_total - 1 end as repeat_purchase_days,
        {{ profile_enrichment.days_between('per_customer.first_purchase_date', 'per_customer.last_purchase_date') }}
            as repeat_recency_days,
        case when per_customer.purchase_days_total > 1
            then (per_customer.revenue_total - first_purchase_day.first_purchase_day_revenue)
                / (per_customer.purchase_days_total - 1)
            when per_customer.purchase_days_total = 1 then 0
        end as repeat_average_value,
        per_customer.orders_total > 0 as has_purchased,
        per_customer.orders_in_recent_window = 0 as is_conversion_eligible
    from per_customer
    left join first_purchase_day
        on per_customer.customer_id = first_purchase_day.customer_id
        and per_customer.as_of_date = first_purchase_day.as_of_date
),

scored as (
    select
        derived.*,
        case when has_purchased then cast(ceil(5 * cume_dist() over (
            partition by as_of_date, has_purchased order by recency_days desc)) as integer)
        end as recency_score,
        case when has_purchased then cast(ceil(5 * cume_dist() over (
            partition by as_of_date, has_purchased order by purchase_days_total)) as integer)
        end as frequency_score,
        case when has_purchased then cast(ceil(5 * cume_dist() over (
            partition by as_of_date, has_purchased order by revenue_total)) as integer)
        end as monetary_score
    from derived
),

segment_map as (
    select * from {{ ref('rfm_segment_map') }}
),

final as (
    select
        scored.*,
        cast(floor((scored.frequency_score + scored.monetary_score + 1) / 2) as integer)
            as frequency_monetary_score,
        cast(coalesce(segment_map.rfm_segment, 'Prospects') as {{ profile_enrichment.type_varchar() }}) as rfm_segment
    from scored
    left join segment_map
        on scored.recency_score = segment_map.recency_score
        and cast(floor((scored.frequency_score + scored.monetary_score + 1) / 2) as integer)
            = segment_map.frequency_monetary_score
)

select * from final
{%- endmacro %}
