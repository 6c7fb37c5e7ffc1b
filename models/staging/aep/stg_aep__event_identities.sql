{{
    config(
        materialized=profile_enrichment.staging_materialization(),
        incremental_strategy='append',
        full_refresh=profile_enrichment.staging_full_refresh(),
        on_schema_change='fail',
    )
}}
{#- Incremental on DuckDB, by raw file, like stg_aep__experience_events (macros/config/staging.sql). -#}

with

events as (
    select * from {{ ref('stg_aep__experience_events') }}
    where {{ profile_enrichment.staged_files_filter('source_file') }}
),

items as (
    {{ profile_enrichment.identity_map_items('events', 'record_id', 'identity_map_json', ['source_file'], map_path='') }}
),

final as (
    select
        {{ dbt.hash("record_id || '#' || namespace || '#' || cast(item_number as " ~ dbt.type_string() ~ ")") }}
            as event_identity_id,
        record_id,
        source_file,
        namespace,
        item_number,
        identity_value,
        identity_refusal,
        authenticated_state,
        is_primary
    from items
)

select * from final
