{#-
    Training examples: every snapshot row with its labels. The propensity and lifetime-value
    models filter this to the rows whose labels have matured (non-null) for their population.
-#}

with

snapshots as (
    select * from {{ ref('customer_feature_snapshots') }}
),

labels as (
    select * from {{ ref('customer_labels') }}
),

final as (
    select
        snapshots.*,
        labels.is_churned,
        labels.is_converted,
        labels.future_revenue,
        labels.is_churn_eligible
    from snapshots
    inner join labels
        on
            snapshots.customer_id = labels.customer_id
            and snapshots.as_of_date = labels.as_of_date
)

select * from final
