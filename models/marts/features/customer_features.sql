{#- Every customer's features as of the run's as-of date. Definition: macros/features/customer_features_as_of.sql -#}

with

run_date as (
    select as_of_date from {{ ref('int_run_as_of_date') }}
),

features as (
    {{ profile_enrichment.customer_features_as_of('run_date') }}
)

select * from features
