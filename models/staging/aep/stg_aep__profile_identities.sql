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
    {{ profile_enrichment.raw_records_filter('raw_json') }}
),

keyed_records as (
    select
        {{ dbt.hash("source_file || '#' || cast(source_row as " ~ dbt.type_string() ~ ")") }} as profile_record_key,
        source_file,
        source_row,
        {{ profile_enrichment.xdm_text('profile_json', '_id') }} as profile_record_id,
        profile_json
    from records
),

items as (
    {{ profile_enrichment.identity_map_items('keyed_records', 'profile_record_key', 'profile_json') }}
),

final as (
    select
        {{ dbt.hash("items.profile_record_key || '#' || items.namespace || '#' || cast(items.item_number as " ~ dbt.type_string() ~ ")") }}
            as profile_identity_id,
        items.profile_record_key,
        keyed_records.profile_record_id,
        items.namespace,
        items.item_number,
        items.identity_value,
        items.identity_refusal,
        items.is_primary
    from items
    inner join keyed_records
        on items.profile_record_key = keyed_records.profile_record_key
)

select * from final
