{#-
    Each customer's top N categories (var top_categories_n) by affinity score, with the score
    normalized to the customer's total affinity (the scores of all a customer's categories sum to 1).
    Ties break on category_id so the ranking is stable.
-#}
{%- set top_n = profile_enrichment.validated_int_var('top_categories_n', 1, 50) -%}

with

affinity as (
    select * from {{ ref('customer_category_affinity') }}
    where affinity_score > 0
),

ranked as (
    select
        customer_id,
        as_of_date,
        category_id,
        category_name,
        affinity_score,
        affinity_score / cast(sum(cast(affinity_score as decimal(38, 12))) over (
            partition by customer_id
        ) as {{ profile_enrichment.type_double() }}) as normalized_score,
        row_number() over (
            partition by customer_id order by affinity_score desc, category_id asc
        ) as category_rank
    from affinity
),

final as (
    select
        customer_id,
        as_of_date,
        cast(category_rank as integer) as category_rank,
        category_id,
        category_name,
        cast(affinity_score as {{ profile_enrichment.type_double() }}) as affinity_score,
        cast(normalized_score as {{ profile_enrichment.type_double() }}) as normalized_score
    from ranked
    where category_rank <= {{ top_n }}
)

select * from final
