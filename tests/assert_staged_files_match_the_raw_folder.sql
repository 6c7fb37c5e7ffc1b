{{ config(enabled=target.type == 'duckdb') }}
{#-
    Incremental staging (DuckDB) parses each raw file once, by name. A file that was changed or
    removed after it was staged must not be served stale: this test compares, file by file,
    the records in the raw folder with the records staged, and returns every file that differs
    (rebuild staging: profile-enrichment run does it by itself; with dbt, --full-refresh or
    --vars '{rebuild_staging: true}'). Parquet rows are always records, so they are counted
    without rendering them as JSON; JSON Lines count their non-blank lines, as staging does.
-#}

with

raw_records as (
    select
        source_file,
        count(*) as raw_records
    from {{ source('aep', 'experience_events') }}
    {{ profile_enrichment.raw_records_filter('raw_json') }}
    group by 1
),

staged_records as (
    select
        source_file,
        count(*) as staged_records
    from {{ ref('stg_aep__experience_events') }}
    group by 1
),

final as (
    select
        coalesce(raw_records.source_file, staged_records.source_file) as source_file,
        raw_records.raw_records,
        staged_records.staged_records,
        case
            when raw_records.source_file is null then 'removed after it was staged'
            when staged_records.source_file is null then 'not staged'
            else 'changed after it was staged'
        end as problem
    from raw_records
    full outer join staged_records
        on raw_records.source_file = staged_records.source_file
    where raw_records.raw_records is distinct from staged_records.staged_records
)

select * from final
