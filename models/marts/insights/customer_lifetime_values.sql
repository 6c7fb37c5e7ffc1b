{#- Contracted view of ml_clv_scores (Python models cannot carry contracts). -#}

with

scores as (
    select * from {{ ref('ml_clv_scores') }}
),

final as (
    select
        cast(customer_id as {{ dbt.type_string() }}) as customer_id,
        cast(as_of_date as date) as as_of_date,
        cast(clv_probability_alive as {{ profile_enrichment.type_double() }}) as clv_probability_alive,
        cast(clv_expected_purchases as {{ profile_enrichment.type_double() }}) as clv_expected_purchases,
        cast(clv_expected_order_value as {{ profile_enrichment.type_double() }}) as clv_expected_order_value,
        cast(clv_predicted_value as {{ profile_enrichment.type_double() }}) as clv_predicted_value,
        cast(clv_percentile as integer) as clv_percentile,
        cast(clv_horizon_days as integer) as clv_horizon_days,
        cast(clv_currency_code as {{ dbt.type_string() }}) as clv_currency_code,
        cast(clv_model_version as {{ dbt.type_string() }}) as clv_model_version
    from scores
)

select * from final
