{#-
    The run's as-of date, in one place: var as_of_date (env PE_AS_OF_DATE) when given,
    else the day after the newest accepted event. Features see only days strictly before it.
-#}
{%- set as_of_date = profile_enrichment.validated_date_var('as_of_date') -%}

with

accepted as (
    select * from {{ ref('int_events_accepted') }}
),

bounds as (
    select
        min(event_date) as first_event_date,
        max(event_date) as last_event_date
    from accepted
),

final as (
    select
        {%- if as_of_date %}
        cast('{{ as_of_date }}' as date) as as_of_date,
        {%- else %}
        cast({{ dbt.dateadd('day', 1, 'last_event_date') }} as date) as as_of_date,
        {%- endif %}
        first_event_date,
        last_event_date,
        {{ "true" if as_of_date else "false" }} as is_as_of_date_given
    from bounds
    -- no accepted events and no configured date: no row, so there is nothing to score
    where {{ "true" if as_of_date else "last_event_date is not null" }}
)

select * from final
