{{
    config(
        materialized=profile_enrichment.keyed_incremental_materialization(),
        unique_key='event_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        full_refresh=profile_enrichment.staging_full_refresh(),
        post_hook="{{ profile_enrichment.build_journeys_in_buckets() }}",
    )
}}
{#-
    One row per accepted purchase, with the path around it and the touches credited for it,
    computed with emulated Query Service ADFs (macros/adf/) over each identity's whole event
    stream, ordered by event_at then event_id:

      PREVIOUS / NEXT                 previous and next purchase, the page just before it
      TIME_BETWEEN_PREVIOUS_MATCH     seconds since the last email click
      TIME_BETWEEN_NEXT_MATCH         hours until the next email click (negative, as in Adobe)
      ATTRIBUTION_FIRST/LAST_TOUCH    first and last marketing touch, with and without a 7-day
                                      expiry (_EXP_TIMEOUT)

    Touches: an email click is an 'email' touch and a page view a 'web' touch; every other event
    is not a touch. Identities are not stitched here (identity_key is the event's own identity).

    Incremental (DuckDB, PostgreSQL): a purchase's row depends on its identity's whole stream,
    before and after it (the next purchase, the next e-mail click), so a nightly run recomputes
    every identity with an accepted event on or after the newest purchase date already in the
    table minus var late_arrival_lookback_days, over that identity's whole history, and replaces
    those identities' rows by event_id. Later-arriving events older than that are the same late
    data the daily rollups do not re-read either; a full refresh picks them up. When staging is
    rebuilt because a raw file changed (var rebuild_staging), the journeys are rebuilt too: a
    changed history can remove purchases, and delete+insert would keep their rows.

    The SQL: macros/journeys/purchase_journeys.sql. On DuckDB this query selects nothing and
    the post-hook build_journeys_in_buckets builds the same identities in buckets of about var
    journey_rows_per_bucket events; elsewhere this query builds them.
-#}

{%- if profile_enrichment.events_by_file() %}
{{ profile_enrichment.purchase_journeys('false') }}
{%- elif is_incremental() %}
{{ profile_enrichment.purchase_journeys(
    profile_enrichment.journeys_identities_since(profile_enrichment.journeys_cutoff_date())) }}
{%- else %}
{{ profile_enrichment.purchase_journeys('true') }}
{%- endif %}
