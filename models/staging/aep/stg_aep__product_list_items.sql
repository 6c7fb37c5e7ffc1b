{{
    config(
        materialized=profile_enrichment.staging_materialization(),
        incremental_strategy='append',
        full_refresh=profile_enrichment.staging_full_refresh(),
        on_schema_change='fail',
    )
}}
{#-
    Incremental on DuckDB, by raw file, like stg_aep__experience_events (macros/config/staging.sql).
    Each line's fields are read in one pass (xdm_texts / xdm_types), not one parse per field.
-#}
{%- set item_text_paths = [
    'SKU', 'name', 'quantity', 'priceTotal', 'currencyCode',
    'productCategories[0].categoryID', 'productCategories[0].categoryName',
] -%}
{%- set item_type_paths = ['quantity', 'priceTotal'] -%}

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
        {{ profile_enrichment.xdm_texts('items.value', item_text_paths) }} as texts,
        {{ profile_enrichment.xdm_types('items.value', item_type_paths) }} as types
    from events,
        {{ profile_enrichment.xdm_each('events.product_list_items_json', '') }} as items
    where events.product_list_items_json_type = 'array'
),

typed_lines as (
    select
        lines.*,
        {{ profile_enrichment.xdm_type_name(profile_enrichment.xdm_list_item('types', 1)) }}
            as quantity_json_type,
        {{ profile_enrichment.xdm_type_name(profile_enrichment.xdm_list_item('types', 2)) }}
            as line_total_json_type
    from lines
),

final as (
    select
        {{ dbt.hash("record_id || '#' || cast(line_number as " ~ dbt.type_string() ~ ")") }} as product_line_id,
        record_id,
        source_file,
        event_id,
        line_number,
        {{ profile_enrichment.xdm_list_item('texts', 1) }} as sku,
        {{ profile_enrichment.xdm_list_item('texts', 2) }} as product_name,
        case
            when quantity_json_type = 'number'
                then cast({{ profile_enrichment.xdm_list_item('texts', 3) }} as {{ profile_enrichment.type_double() }})
        end as quantity,
        quantity_json_type,
        case
            when line_total_json_type = 'number'
                then cast({{ profile_enrichment.xdm_list_item('texts', 4) }} as {{ profile_enrichment.type_double() }})
        end as line_total,
        line_total_json_type,
        upper({{ profile_enrichment.xdm_list_item('texts', 5) }}) as currency_code,
        {{ profile_enrichment.xdm_list_item('texts', 6) }} as category_id,
        {{ profile_enrichment.xdm_list_item('texts', 7) }} as category_name
    from typed_lines
)

select * from final
