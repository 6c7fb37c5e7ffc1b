{{ config(materialized='table') }}
{#-
    Materialized as a table, not a view: every record is parsed from JSON exactly once here,
    and the identity, product-line and validation models all read the parsed columns.
-#}
{%- do profile_enrichment.validated_path_var('raw_dir') -%}
{%- do profile_enrichment.validated_raw_format() -%}

with

source as (
    select * from {{ source('aep', 'experience_events') }}
),

records as (
    select
        source_file,
        source_row,
        raw_json,
        {{ profile_enrichment.xdm_parse_json('raw_json') }} as event_json
    from source
    where raw_json is not null and trim(raw_json) <> ''
),

flattened as (
    select
        {{ dbt.hash("records.source_file || '#' || cast(records.source_row as varchar)") }}
            as record_id,
        records.source_file,
        records.source_row,
        records.event_json is not null as is_valid_json,
        length(records.raw_json) as record_bytes,
        case when records.event_json is null then left(records.raw_json, 200) end as raw_excerpt,
        records.event_json,

        {{ profile_enrichment.xdm_text('records.event_json', '_id') }} as event_id,
        {{ profile_enrichment.xdm_type('records.event_json', '_id') }} as event_id_json_type,
        {{ profile_enrichment.xdm_text('records.event_json', 'eventType') }} as event_type,
        {{ profile_enrichment.xdm_type('records.event_json', 'eventType') }} as event_type_json_type,
        {{ profile_enrichment.xdm_text('records.event_json', 'timestamp') }} as timestamp_text,
        {{ profile_enrichment.xdm_timestamp_utc(
            profile_enrichment.xdm_text('records.event_json', 'timestamp')) }} as event_at,
        {{ profile_enrichment.xdm_type('records.event_json', 'identityMap') }} as identity_map_json_type,

        {{ profile_enrichment.xdm_text('records.event_json', 'commerce.order.purchaseID') }} as order_id,
        {{ profile_enrichment.xdm_number('records.event_json', 'commerce.order.priceTotal') }}
            as order_total,
        {{ profile_enrichment.xdm_type('records.event_json', 'commerce.order.priceTotal') }}
            as order_total_json_type,
        upper({{ profile_enrichment.xdm_text('records.event_json', 'commerce.order.currencyCode') }})
            as currency_code,

        {{ profile_enrichment.xdm_text('records.event_json', 'web.webPageDetails.name') }} as page_name,
        {{ profile_enrichment.xdm_text('records.event_json', 'web.webPageDetails.URL') }} as page_url,
        {{ profile_enrichment.xdm_type('records.event_json', 'productListItems') }}
            as product_list_items_json_type
    from records
),

final as (
    select
        *,
        cast(event_at as date) as event_date
    from flattened
)

select * from final
