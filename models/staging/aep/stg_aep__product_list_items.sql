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

lines as (
    select
        events.record_id,
        events.source_file,
        events.event_id,
        cast(items.key as integer) + 1 as line_number,
        items.value as item_json
    from events,
        {{ profile_enrichment.xdm_each('events.event_json', 'productListItems') }} as items
    where events.product_list_items_json_type = 'array'
),

final as (
    select
        {{ dbt.hash("record_id || '#' || cast(line_number as " ~ dbt.type_string() ~ ")") }} as product_line_id,
        record_id,
        source_file,
        event_id,
        line_number,
        {{ profile_enrichment.xdm_text('item_json', 'SKU') }} as sku,
        {{ profile_enrichment.xdm_text('item_json', 'name') }} as product_name,
        {{ profile_enrichment.xdm_number('item_json', 'quantity') }} as quantity,
        {{ profile_enrichment.xdm_type('item_json', 'quantity') }} as quantity_json_type,
        {{ profile_enrichment.xdm_number('item_json', 'priceTotal') }} as line_total,
        {{ profile_enrichment.xdm_type('item_json', 'priceTotal') }} as line_total_json_type,
        upper({{ profile_enrichment.xdm_text('item_json', 'currencyCode') }}) as currency_code,
        {{ profile_enrichment.xdm_text('item_json', 'productCategories[0].categoryID') }} as category_id,
        {{ profile_enrichment.xdm_text('item_json', 'productCategories[0].categoryName') }}
            as category_name
    from lines
)

select * from final
