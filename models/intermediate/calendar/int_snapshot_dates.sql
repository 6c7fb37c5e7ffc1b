{#-
    The as-of dates of the training snapshots: the first day of each month, going back
    var snapshot_months from the run's as-of date (the as-of date's own month included when it
    falls on the 1st), never before the first event.
-#}
{%- set snapshot_months = profile_enrichment.validated_int_var('snapshot_months', 1, 240) -%}

with

run_date as (
    select * from {{ ref('int_run_as_of_date') }}
),

month_offsets as (
    {{ dbt.generate_series(snapshot_months + 1) }}
),

candidates as (
    select
        cast({{ dbt.dateadd(
            'month',
            '-(month_offsets.generated_number - 1)',
            dbt.date_trunc('month', 'run_date.as_of_date')) }} as date) as as_of_date,
        run_date.as_of_date as run_as_of_date,
        run_date.first_event_date
    from month_offsets
    cross join run_date
),

final as (
    select as_of_date
    from candidates
    where
        as_of_date <= run_as_of_date
        and as_of_date > first_event_date
        and as_of_date > cast({{ dbt.dateadd('month', -snapshot_months, 'run_as_of_date') }} as date)
)

select * from final
