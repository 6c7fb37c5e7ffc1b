{#- Category affinity per customer x category as of the run's as-of date. Definition: macros/features/category_affinity_as_of.sql -#}

with

run_date as (
    select as_of_date from {{ ref('int_run_as_of_date') }}
),

affinity as (
    {{ profile_enrichment.category_affinity_as_of('run_date') }}
)

select * from affinity
