{#- Contracted view of ml_segments. -#}

with

segments as (
    select * from {{ ref('ml_segments') }}
),

final as (
    select
        cast(customer_id as {{ dbt.type_string() }}) as customer_id,
        cast(as_of_date as date) as as_of_date,
        cast(segment_id as integer) as segment_id,
        cast(segment_name as {{ dbt.type_string() }}) as segment_name,
        cast(segment_model_version as {{ dbt.type_string() }}) as segment_model_version
    from segments
)

select * from final
