{#-
    One row per customer: every model's output side by side, named <model>_<field>, with the
    identities used for export. No wall-clock time: score_date is the as-of date, so a rerun on
    the same inputs gives the same table.
-#}

with

customers as (
    select
        customer_id,
        as_of_date,
        rfm_segment
    from {{ ref('customer_features') }}
),

identities as (
    select * from {{ ref('int_customer_identities') }}
),

churn as (
    select * from {{ ref('churn_propensity_scores') }}
),

conversion as (
    select * from {{ ref('conversion_propensity_scores') }}
),

lifetime_values as (
    select * from {{ ref('customer_lifetime_values') }}
),

segments as (
    select * from {{ ref('customer_segments') }}
),

top_categories as (
    select
        customer_id,
        {{ profile_enrichment.json_array_agg(
            [('id', 'category_id'), ('name', 'category_name'),
             ('score', 'round(normalized_score, 6)'), ('rank', 'category_rank')],
            'category_rank') }} as top_categories_json
    from {{ ref('customer_top_categories') }}
    group by 1
),

final as (
    select
        customers.customer_id,
        identities.crm_id,
        identities.email_sha256,
        identities.ecid,
        customers.as_of_date as score_date,
        customers.rfm_segment,
        churn.churn_probability,
        churn.churn_score,
        churn.churn_percentile,
        churn.churn_bucket,
        churn.churn_factors_json,
        churn.churn_model_version,
        conversion.conversion_probability,
        conversion.conversion_score,
        conversion.conversion_percentile,
        conversion.conversion_bucket,
        conversion.conversion_factors_json,
        conversion.conversion_model_version,
        lifetime_values.clv_predicted_value as clv_expected_value,
        lifetime_values.clv_expected_purchases,
        lifetime_values.clv_probability_alive,
        lifetime_values.clv_expected_order_value,
        lifetime_values.clv_percentile,
        lifetime_values.clv_horizon_days,
        lifetime_values.clv_currency_code,
        lifetime_values.clv_model_version,
        segments.segment_id,
        segments.segment_name,
        segments.segment_model_version,
        top_categories.top_categories_json
    from customers
    left join identities
        on customers.customer_id = identities.customer_id
    left join churn
        on customers.customer_id = churn.customer_id
    left join conversion
        on customers.customer_id = conversion.customer_id
    left join lifetime_values
        on customers.customer_id = lifetime_values.customer_id
    left join segments
        on customers.customer_id = segments.customer_id
    left join top_categories
        on customers.customer_id = top_categories.customer_id
)

select * from final
