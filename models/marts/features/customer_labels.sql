{#-
    Training labels for every snapshot row (customer_id, as_of_date). Labels look only at the
    future of their as-of date S, and exist only when their whole horizon has elapsed before
    the run's as-of date: no partial windows. A label whose horizon has not elapsed is null.

    Who a snapshot row's future belongs to: its identity as finally stitched (an anonymous
    visitor who later logs in converts when that person buys).
-#}
{%- set churn_days = profile_enrichment.validated_int_var('churn_horizon_days', 1, 3650) -%}
{%- set conversion_days = profile_enrichment.validated_int_var('conversion_horizon_days', 1, 3650) -%}
{%- set clv_days = profile_enrichment.validated_int_var('clv_horizon_days', 1, 3650) -%}
{%- set longest = [churn_days, conversion_days, clv_days] | max -%}

with

snapshots as (
    -- The snapshot dates of this run's window (var snapshot_months): an incremental build keeps
    -- the dates that have left the window in customer_feature_snapshots (it never deletes), so
    -- labels, and therefore training, use the same dates as a full refresh.
    select snapshots.*
    from {{ ref('customer_feature_snapshots') }} as snapshots
    where snapshots.as_of_date in (select window_dates.as_of_date from {{ ref('int_snapshot_dates') }} as window_dates)
),

run_date as (
    select as_of_date as run_as_of_date from {{ ref('int_run_as_of_date') }}
),

activity as (
    select * from {{ ref('int_identity_daily_activity') }}
    where orders > 0
),

links as (
    -- only links this run can know: a login on or after the run's as-of date must not
    -- change labels computed as of that date
    select * from {{ ref('int_identity_links') }}
    where linked_date < (select run_date.as_of_date from {{ ref('int_run_as_of_date') }} as run_date)
),

purchases as (
    select
        coalesce(links.person_key, activity.identity_key) as person_key,
        activity.activity_date,
        activity.orders,
        activity.revenue
    from activity
    left join links
        on activity.identity_key = links.alias_key
),

snapshot_people as (
    select
        snapshots.customer_id,
        snapshots.as_of_date,
        snapshots.orders_total,
        snapshots.is_conversion_eligible,
        coalesce(links.person_key, snapshots.customer_id) as person_key,
        run_date.run_as_of_date,
        {{ dbt.dateadd('day', churn_days, 'snapshots.as_of_date') }} <= run_date.run_as_of_date
            as is_churn_horizon_elapsed,
        {{ dbt.dateadd('day', conversion_days, 'snapshots.as_of_date') }} <= run_date.run_as_of_date
            as is_conversion_horizon_elapsed,
        {{ dbt.dateadd('day', clv_days, 'snapshots.as_of_date') }} <= run_date.run_as_of_date
            as is_clv_horizon_elapsed
    from snapshots
    cross join run_date
    left join links
        on snapshots.customer_id = links.alias_key
),

future as (
    select
        snapshot_people.customer_id,
        snapshot_people.as_of_date,
        cast(coalesce(sum(case
            when
                purchases.activity_date
                < {{ dbt.dateadd('day', churn_days, 'snapshot_people.as_of_date') }}
                then purchases.orders
        end), 0) as bigint) as orders_in_churn_horizon,
        cast(coalesce(sum(case
            when
                purchases.activity_date
                < {{ dbt.dateadd('day', conversion_days, 'snapshot_people.as_of_date') }}
                then purchases.orders
        end), 0) as bigint) as orders_in_conversion_horizon,
        cast(coalesce(sum(case
            when
                purchases.activity_date
                < {{ dbt.dateadd('day', clv_days, 'snapshot_people.as_of_date') }}
                then cast(purchases.revenue as decimal(38, 6))
        end), 0) as {{ profile_enrichment.type_double() }}) as revenue_in_clv_horizon
    from snapshot_people
    left join purchases
        on
            snapshot_people.person_key = purchases.person_key
            and snapshot_people.as_of_date <= purchases.activity_date
            and purchases.activity_date < {{ dbt.dateadd('day', longest, 'snapshot_people.as_of_date') }}
            and snapshot_people.run_as_of_date > purchases.activity_date
    group by 1, 2
),

final as (
    select
        snapshot_people.customer_id,
        snapshot_people.as_of_date,
        case
            when snapshot_people.orders_total > 0 and snapshot_people.is_churn_horizon_elapsed
                then future.orders_in_churn_horizon = 0
        end as is_churned,
        case
            when snapshot_people.is_conversion_horizon_elapsed
                then future.orders_in_conversion_horizon > 0
        end as is_converted,
        case
            when snapshot_people.is_clv_horizon_elapsed
                then future.revenue_in_clv_horizon
        end as future_revenue,
        snapshot_people.orders_total > 0 as is_churn_eligible,
        snapshot_people.is_conversion_eligible
    from snapshot_people
    inner join future
        on
            snapshot_people.customer_id = future.customer_id
            and snapshot_people.as_of_date = future.as_of_date
)

select * from final
