{{
    config(
        materialized=profile_enrichment.by_file_materialization(),
        incremental_strategy='append',
        full_refresh=profile_enrichment.staging_full_refresh(),
        on_schema_change='fail',
        post_hook="{{ profile_enrichment.build_validated_by_file() }}",
    )
}}
{#-
    Every raw record with the reasons it cannot be used. One row per record, so the
    accounting "records read = accepted + quarantined" can be checked exactly.
    The checks: events_checked (macros/ingestion/validate_events.sql); reason codes and their
    precedence live in the quarantine_reasons seed.

    On DuckDB the post-hook build_validated_by_file builds it one raw file at a time and
    incrementally (a night validates only new files), then settles duplicates across files;
    this query then selects no file. Elsewhere this query builds it whole.
    Why and how: macros/ingestion/events_by_file.sql.
-#}
{%- set by_file = profile_enrichment.events_by_file() -%}

-- depends_on: {{ ref('quarantine_reasons') }} (the reason codes below are listed there)

with

checked as (
    {{ profile_enrichment.events_checked(false if by_file else none) }}
),

deduplicated as (
    select
        *,
        case
            when reasons_before_dedup = ''
                then row_number() over (
                    partition by event_id, reasons_before_dedup = ''
                    order by source_file, source_row
                )
        end as copy_number
    from checked
),

final as (
    select
        {{ profile_enrichment.validated_columns('copy_number') }}
    from deduplicated
)

select * from final
