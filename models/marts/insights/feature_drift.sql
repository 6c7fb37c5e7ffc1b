{#- Contracted view of ml_feature_drift. -#}

with

drift as (
    select * from {{ ref('ml_feature_drift') }}
),

final as (
    select
        cast(as_of_date as date) as as_of_date,
        cast(feature as {{ dbt.type_string() }}) as feature,
        cast(psi as {{ profile_enrichment.type_double() }}) as psi,
        cast(is_drifted as boolean) as is_drifted,
        cast(train_mean as {{ profile_enrichment.type_double() }}) as train_mean,
        cast(score_mean as {{ profile_enrichment.type_double() }}) as score_mean,
        cast(n_train as bigint) as n_train,
        cast(n_score as bigint) as n_score
    from drift
)

select * from final
