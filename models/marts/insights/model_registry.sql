{#- Contracted view of the model registry: one row per trained model version. -#}

with

registry as (
    select * from {{ ref('ml_model_registry') }}
),

final as (
    select
        cast(model_name as {{ dbt.type_string() }}) as model_name,
        cast(model_version as {{ dbt.type_string() }}) as model_version,
        cast(as_of_date as date) as as_of_date,
        cast(training_window_start as date) as training_window_start,
        cast(training_window_end as date) as training_window_end,
        cast(n_train as bigint) as n_train,
        cast(n_valid as bigint) as n_valid,
        cast(params_json as {{ dbt.type_string() }}) as params_json,
        cast(metrics_json as {{ dbt.type_string() }}) as metrics_json,
        cast(features_json as {{ dbt.type_string() }}) as features_json,
        cast(status as {{ dbt.type_string() }}) as status,
        cast(reason as {{ dbt.type_string() }}) as reason,
        cast(artifact_path as {{ dbt.type_string() }}) as artifact_path,
        cast(artifact_sha256 as {{ dbt.type_string() }}) as artifact_sha256,
        cast(superseded_by as {{ dbt.type_string() }}) as superseded_by
    from registry
)

select * from final
