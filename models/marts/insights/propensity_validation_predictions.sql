{#- Contracted view of the propensity champions' validation rows (for the model report). -#}

with

validation as (
    select * from {{ ref('ml_propensity_validation') }}
),

final as (
    select
        cast(model_name as {{ dbt.type_string() }}) as model_name,
        cast(model_version as {{ dbt.type_string() }}) as model_version,
        cast(valid_as_of_date as date) as valid_as_of_date,
        cast(customer_id as {{ dbt.type_string() }}) as customer_id,
        cast(is_positive as boolean) as is_positive,
        cast(probability as {{ profile_enrichment.type_double() }}) as probability
    from validation
)

select * from final
