{#-
    Churn and conversion scored in SQL by the compiled champions, on any engine. On DuckDB it
    equals the Python scores (tests/assert_sql_scores_equal_python_scores.sql); on
    PostgreSQL, which has no Python models, it is how scores are made.
-#}

with

churn as (
    {{ profile_enrichment.compiled_scores(
        'churn', ref('ml_scoring_sql'), ref('customer_features'),
        profile_enrichment.compiled_propensity_columns()) }}
),

conversion as (
    {{ profile_enrichment.compiled_scores(
        'conversion', ref('ml_scoring_sql'), ref('customer_features'),
        profile_enrichment.compiled_propensity_columns()) }}
),

final as (
    select * from churn
    union all
    select * from conversion
)

select * from final
