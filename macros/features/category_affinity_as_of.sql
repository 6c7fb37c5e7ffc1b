{#-
    Category affinity per customer x category as of each date in `as_of_dates`, from the
    daily category rollup through activity_before() (so it is point-in-time like every feature).

    affinity_score: views, cart adds and purchased units weighted by var affinity_weights and
    decayed by age in whole days with half-life var affinity_half_life_days:
        sum(weighted_events * 0.5 ^ (days_before_as_of / half_life))
    The exponent is divided by a double: `days / 30.0` is a decimal division, which Spark
    rounds to 6 decimals (affinity then differed from DuckDB by 3e-7 relative).
    share_of_wallet: the category's share of the customer's revenue (null without revenue).
    Categories come from the data.
-#}
{% macro category_affinity_as_of(as_of_dates) -%}
{%- set half_life = profile_enrichment.validated_int_var('affinity_half_life_days', 1, 3650) -%}
{%- set weights = var('affinity_weights', {'product_view': 1, 'cart_add': 3, 'purchase': 5}) -%}
{%- for key in ['product_view', 'cart_add', 'purchase'] -%}
    {%- if weights.get(key) is not number -%}
        {{ exceptions.raise_compiler_error("var 'affinity_weights." ~ key ~ "' must be a number") }}
    {%- endif -%}
{%- endfor -%}
with

visible_activity as (
    {{ profile_enrichment.activity_before(as_of_dates, ref('int_identity_category_daily')) }}
),

per_category as (
    select
        customer_id,
        as_of_date,
        category_id,
        max(category_name) as category_name,
        cast(sum(product_views) as bigint) as product_views,
        cast(sum(cart_adds) as bigint) as cart_adds,
        cast(sum(units_purchased) as bigint) as units_purchased,
        {{ profile_enrichment.exact_sum('revenue') }} as revenue,
        max(activity_date) as last_activity_date,
        {{ profile_enrichment.exact_sum(
            '(product_views * ' ~ weights['product_view']
            ~ ' + cart_adds * ' ~ weights['cart_add']
            ~ ' + units_purchased * ' ~ weights['purchase'] ~ ')'
            ~ ' * power(0.5, ' ~ profile_enrichment.days_between('activity_date', 'as_of_date')
            ~ ' / cast(' ~ half_life ~ ' as ' ~ profile_enrichment.type_double() ~ '))',
            12) }} as affinity_score
    from visible_activity
    group by 1, 2, 3
),

final as (
    select
        per_category.*,
        case when sum(cast(revenue as decimal(38, 6))) over (partition by customer_id, as_of_date) > 0
            then revenue / cast(sum(cast(revenue as decimal(38, 6))) over (
                partition by customer_id, as_of_date) as {{ profile_enrichment.type_double() }})
        end as share_of_wallet
    from per_category
)

select * from final
{%- endmacro %}
