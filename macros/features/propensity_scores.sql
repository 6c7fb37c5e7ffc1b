{#-
    The contracted projection of a propensity Python model's output, with columns prefixed by
    the model name (churn_probability, conversion_score, ...). One definition for both models.
-#}
{% macro propensity_scores(model_name) -%}
with

scores as (
    select * from {{ ref('ml_' ~ model_name ~ '_scores') }}
),

final as (
    select
        cast(customer_id as {{ dbt.type_string() }}) as customer_id,
        cast(as_of_date as date) as as_of_date,
        cast(probability as {{ profile_enrichment.type_double() }}) as {{ model_name }}_probability,
        cast(score as integer) as {{ model_name }}_score,
        cast(percentile as integer) as {{ model_name }}_percentile,
        cast(bucket as {{ dbt.type_string() }}) as {{ model_name }}_bucket,
        {%- for rank in [1, 2, 3] %}
        cast(factor_{{ rank }}_code as {{ dbt.type_string() }}) as {{ model_name }}_factor_{{ rank }}_code,
        cast(factor_{{ rank }}_value as {{ profile_enrichment.type_double() }}) as {{ model_name }}_factor_{{ rank }}_value,
        cast(factor_{{ rank }}_importance as {{ dbt.type_string() }})
            as {{ model_name }}_factor_{{ rank }}_importance,
        cast(factor_{{ rank }}_direction as {{ dbt.type_string() }})
            as {{ model_name }}_factor_{{ rank }}_direction,
        {%- endfor %}
        cast(factors_json as {{ dbt.type_string() }}) as {{ model_name }}_factors_json,
        cast(model_version as {{ dbt.type_string() }}) as {{ model_name }}_model_version
    from scores
)

select * from final
{%- endmacro %}
