{%- do profile_enrichment.validated_path_var('raw_dir') -%}

with

source as (
    select * from {{ source('aep', 'profiles') }}
),

records as (
    select
        source_file,
        source_row,
        {{ profile_enrichment.xdm_parse_json('raw_json') }} as profile_json
    from source
    where raw_json is not null and trim(replace(raw_json, chr(9), '')) <> ''
),

namespaces as (
    select
        records.source_file,
        records.source_row,
        {{ profile_enrichment.xdm_text('records.profile_json', '_id') }} as profile_record_id,
        namespaces.key as namespace,
        namespaces.value as items_json
    from records,
        {{ profile_enrichment.xdm_each('records.profile_json', 'identityMap') }} as namespaces
    where {{ profile_enrichment.xdm_type('records.profile_json', 'identityMap') }} = 'object'
),

items as (
    select
        namespaces.source_file,
        namespaces.source_row,
        namespaces.profile_record_id,
        namespaces.namespace,
        cast(items.key as integer) + 1 as item_number,
        items.value as item_json
    from namespaces,
        {{ profile_enrichment.xdm_each('namespaces.items_json', '') }} as items
    where {{ profile_enrichment.xdm_type('namespaces.items_json', '') }} = 'array'
),

final as (
    select
        {{ dbt.hash("source_file || '#' || cast(source_row as varchar) || '#' || namespace || '#' || cast(item_number as varchar)") }}
            as profile_identity_id,
        {{ dbt.hash("source_file || '#' || cast(source_row as varchar)") }} as profile_record_key,
        profile_record_id,
        namespace,
        item_number,
        nullif(trim({{ profile_enrichment.xdm_text('item_json', 'id') }}), '') as identity_value,
        coalesce({{ profile_enrichment.xdm_text('item_json', 'primary') }} = 'true', false) as is_primary
    from items
)

select * from final
