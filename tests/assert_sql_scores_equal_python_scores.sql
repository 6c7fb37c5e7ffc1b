{#-
    The champions compiled to SQL score every customer exactly as Python does: the same
    customers, probability within 1e-9, the same integer score, percentile and bucket, and
    the same model version; and the closed-form lifetime values (clv_scores_in_sql) match
    customer_lifetime_values. Any row returned is a difference.
-#}

with

sql_scores as (
    select * from {{ ref('propensity_scores_in_sql') }}
),

python_scores as (
    {%- for model_name in ['churn', 'conversion'] %}
    select
        '{{ model_name }}' as model_name,
        {{ model_name }}_model_version as model_version,
        customer_id,
        {{ model_name }}_probability as probability,
        {{ model_name }}_score as score,
        {{ model_name }}_percentile as percentile,
        {{ model_name }}_bucket as bucket
    from {{ ref(model_name ~ '_propensity_scores') }}
    {{ 'union all' if not loop.last }}
    {%- endfor %}
),

compared as (
    select
        coalesce(sql_scores.model_name, python_scores.model_name) as model_name,
        coalesce(sql_scores.customer_id, python_scores.customer_id) as customer_id,
        sql_scores.probability as sql_probability,
        python_scores.probability as python_probability,
        sql_scores.score as sql_score,
        python_scores.score as python_score,
        sql_scores.percentile as sql_percentile,
        python_scores.percentile as python_percentile,
        sql_scores.bucket as sql_bucket,
        python_scores.bucket as python_bucket,
        sql_scores.model_version as sql_model_version,
        python_scores.model_version as python_model_version
    from sql_scores
    full outer join python_scores
        on
            sql_scores.model_name = python_scores.model_name
            and sql_scores.customer_id = python_scores.customer_id
)

select *
from compared
where
    sql_probability is null
    or python_probability is null
    or abs(sql_probability - python_probability) > 1e-9
    or sql_score <> python_score
    or sql_percentile <> python_percentile
    or sql_bucket <> python_bucket
    or sql_model_version <> python_model_version

union all

-- lifetime value: the closed-form columns, P(alive) within 1e-9, order value 1e-9 relative
select
    'clv' as model_name,
    coalesce(sql_values.customer_id, python_values.customer_id) as customer_id,
    sql_values.clv_probability_alive as sql_probability,
    python_values.clv_probability_alive as python_probability,
    null as sql_score,
    null as python_score,
    null as sql_percentile,
    null as python_percentile,
    null as sql_bucket,
    null as python_bucket,
    sql_values.model_version as sql_model_version,
    python_values.clv_model_version as python_model_version
from {{ ref('clv_scores_in_sql') }} as sql_values
full outer join {{ ref('customer_lifetime_values') }} as python_values
    on sql_values.customer_id = python_values.customer_id
where
    sql_values.customer_id is null
    or python_values.customer_id is null
    or abs(sql_values.clv_probability_alive - python_values.clv_probability_alive) > 1e-9
    or abs(sql_values.clv_expected_order_value - python_values.clv_expected_order_value)
    > 1e-9 * greatest(1, abs(python_values.clv_expected_order_value))
    or sql_values.model_version <> python_values.clv_model_version
