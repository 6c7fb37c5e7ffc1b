{{
    config(
        post_hook="{{ profile_enrichment.build_identity_links_by_file() }}",
    )
}}
{#-
    Identity stitching. When an event carries a person-level identity (CRMID, say) together
    with lower-priority ones (ECID, Email_LC_SHA256), those aliases belong to that person from
    the day they were first seen together (linked_date). Features as of D only apply links
    with linked_date < D, so a visitor who logs in later is not revealed early (no leakage).
    An alias seen with several people is linked to the first one (then the smallest key).
    An alias of an alias is followed to the final person (linked from the later of the two days).

    The SQL: macros/identity/identity_links.sql. On DuckDB the post-hook
    build_identity_links_by_file joins the records with their identities one raw file at a
    time, and this query selects no pair; elsewhere this query builds it whole.
-#}
{%- set by_file = profile_enrichment.events_by_file() -%}

{{ profile_enrichment.identity_links_from(
    profile_enrichment.identity_link_pairs(false if by_file else none)) }}
