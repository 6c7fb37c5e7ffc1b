{{ config(materialized='table') }}

with

events as (
    select * from {{ ref('stg_aep__experience_events') }}
),

namespaces as (
    select
        events.record_id,
        namespaces.key as namespace,
        namespaces.value as items_json
    from events,
        {{ profile_enrichment.xdm_each('events.event_json', 'identityMap') }} as namespaces
    where events.identity_map_json_type = 'object'
),

items as (
    select
        namespaces.record_id,
        namespaces.namespace,
        cast(items.key as integer) + 1 as item_number,
        items.value as item_json
    from namespaces,
        {{ profile_enrichment.xdm_each('namespaces.items_json', '') }} as items
    where {{ profile_enrichment.xdm_type('namespaces.items_json', '') }} = 'array'
),

final as (
    select
        {{ dbt.hash("record_id || '#' || namespace || '#' || cast(item_number as varchar)") }}
            as event_identity_id,
        record_id,
        namespace,
        item_number,
        nullif(trim({{ profile_enrichment.xdm_text('item_json', 'id') }}), '') as identity_value,
        coalesce({{ profile_enrichment.xdm_text('item_json', 'authenticatedState') }}, 'ambiguous')
            as authenticated_state,
        coalesce({{ profile_enrichment.xdm_text('item_json', 'primary') }} = 'true', false) as is_primary
    from items
)

select * from final
