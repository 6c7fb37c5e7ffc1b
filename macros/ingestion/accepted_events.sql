{#-
    The accepted events of `source_file` (one file's name; none = every file; false = no file),
    typed, each with its own best identity: the rows of int_events_accepted.
-#}
{% macro accepted_events(source_file=none) -%}
    with

    validated as (
        select * from {{ ref('int_events_validated') }}
        where is_accepted and {{ profile_enrichment.source_file_condition(source_file) }}
    ),

    events as (
        {{ profile_enrichment.file_rows('stg_aep__experience_events', source_file) }}
    ),

    identities as (
        {{ profile_enrichment.file_rows('stg_aep__event_identities', source_file) }}
    ),

    namespaces as (
        select * from {{ ref('identity_namespaces') }}
    ),

    event_types as (
        select * from {{ ref('event_types') }}
    ),

    product_lines as (
        {{ profile_enrichment.file_rows('stg_aep__product_list_items', source_file) }}
    ),

    line_totals as (
        select
            record_id,
            sum(line_total) as lines_total
        from product_lines
        group by 1
    ),

    ranked_identities as (
        select
            identities.record_id,
            identities.namespace,
            identities.identity_value,
            namespaces.priority,
            row_number() over (
                partition by identities.record_id
                order by namespaces.priority asc, identities.is_primary desc, identities.identity_value asc
            ) as identity_rank
        from identities
        inner join namespaces
            on identities.namespace = namespaces.namespace
        where identities.identity_value is not null
    ),

    best_identity as (
        select
            record_id,
            namespace as identity_namespace,
            namespace || ':' || identity_value as identity_key
        from ranked_identities
        where identity_rank = 1
    ),

    final as (
        select
            validated.event_id,
            validated.record_id,
            best_identity.identity_key,
            best_identity.identity_namespace,
            events.event_type,
            event_types.event_group,
            events.event_at,
            events.event_date,
            case
                when event_types.event_group = 'purchase'
                    then coalesce(events.order_id, validated.event_id)
            end as order_id,
            case
                when event_types.event_group = 'purchase'
                    then coalesce(events.order_total, line_totals.lines_total, 0)
            end as revenue,
            case
                when event_types.event_group = 'purchase'
                    then coalesce(events.currency_code, '{{ var("currency_code") }}')
            end as currency_code,
            events.page_name,
            events.source_file
        from validated
        inner join events
            on validated.record_id = events.record_id
        inner join best_identity
            on validated.record_id = best_identity.record_id
        inner join event_types
            on events.event_type = event_types.event_type
        left join line_totals
            on validated.record_id = line_totals.record_id
    )

    select * from final
{%- endmacro %}
