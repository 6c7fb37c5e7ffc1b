{{
    config(
        materialized=profile_enrichment.by_file_materialization(),
        incremental_strategy='append',
        full_refresh=profile_enrichment.staging_full_refresh(),
        on_schema_change='fail',
        post_hook="{{ profile_enrichment.build_accepted_by_file() }}",
    )
}}
{#-
    The clean event stream every feature reads: one row per accepted event, typed, with the
    event's own best identity (identity_key). Stitching anonymous identities to people happens
    later and point-in-time (int_identity_links), because a link is only known from the day
    it was first observed. The rows: accepted_events (macros/ingestion/accepted_events.sql).

    On DuckDB the post-hook build_accepted_by_file rebuilds only the raw files whose accepted
    records changed (every file on a full build), one file at a time; this query then selects
    no file. Elsewhere this query builds it whole. Why: macros/ingestion/events_by_file.sql.
-#}
{%- set by_file = profile_enrichment.events_by_file() -%}

{{ profile_enrichment.accepted_events(false if by_file else none) }}
