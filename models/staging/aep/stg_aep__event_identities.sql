{{ config(materialized='table') }}

with

events as (
    select * from {{ ref('stg_aep__experience_events') }}
),

items as (
    {{ profile_enrichment.identity_map_items('events', 'record_id', 'event_json') }}
),

final as (
    select
        {{ dbt.hash("record_id || '#' || namespace || '#' || cast(item_number as " ~ dbt.type_string() ~ ")") }}
            as event_identity_id,
        record_id,
        namespace,
        item_number,
        identity_value,
        identity_refusal,
        authenticated_state,
        is_primary
    from items
)

select * from final
