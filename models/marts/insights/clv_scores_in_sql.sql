{#-
    The closed-form part of lifetime value computed in SQL from the clv champion's
    parameters, on any engine: P(alive) and the expected order value. Expected purchases and
    the discounted value need the hypergeometric function 2F1 and stay in Python
    (customer_lifetime_values). On DuckDB it equals the Python values
    (tests/assert_sql_scores_equal_python_scores.sql).
-#}

with

final as (
    {{ profile_enrichment.compiled_scores(
        'clv', ref('ml_scoring_sql'), ref('customer_features'), [
            ('customer_id', profile_enrichment.type_varchar()),
            ('clv_probability_alive', profile_enrichment.type_double()),
            ('clv_expected_order_value', profile_enrichment.type_double()),
        ]) }}
)

select * from final
