{#-
    Identity stitching, as two steps so DuckDB can run the costly one a raw file at a time.

    identity_link_pairs: each (alias, person) pair seen on one event, with the first day it
    was seen. This is the join of every accepted record with its identities by record_id: in
    one query at 92.9M events DuckDB spilled up to 32.9 GB for it, and with dbt's two threads it
    ran out of memory. No pair depends on another file, so on DuckDB the post-hook
    build_identity_links_by_file joins one file at a time and collects the pairs (a few per
    person) in a temporary table; identity_links_from then ranks them as one query would.
    PostgreSQL and Spark run both steps in the model's one query.
-#}

{#- The (alias_key, person_key, linked_date) pairs of the accepted records of `source_file`
    (source_file_condition: a name, none = every file, false = none). -#}
{% macro identity_link_pairs(source_file) -%}
with

accepted as (
    select * from {{ ref('int_events_accepted') }}
    where {{ profile_enrichment.source_file_condition(source_file) }}
),

identities as (
    select * from {{ ref('stg_aep__event_identities') }}
    where {{ profile_enrichment.source_file_condition(source_file) }}
),

namespaces as (
    select * from {{ ref('identity_namespaces') }}
),

person_events as (
    select
        accepted.record_id,
        accepted.identity_key as person_key,
        accepted.event_date,
        namespaces.priority as person_priority
    from accepted
    inner join namespaces
        on accepted.identity_namespace = namespaces.namespace
    where namespaces.is_person_level
),

aliases as (
    select
        identities.namespace || ':' || identities.identity_value as alias_key,
        person_events.person_key,
        person_events.event_date
    from person_events
    inner join identities
        on person_events.record_id = identities.record_id
    inner join namespaces
        on identities.namespace = namespaces.namespace
    where
        identities.identity_value is not null
        and namespaces.priority > person_events.person_priority
)

select
    alias_key,
    person_key,
    min(event_date) as linked_date
from aliases
group by 1, 2
{%- endmacro %}


{#- int_identity_links from `pairs`, a query or relation of (alias_key, person_key, linked_date)
    rows, a pair possibly repeated (one row per file it was seen in). -#}
{% macro identity_links_from(pairs) -%}
with

first_links as (
    select
        alias_key,
        person_key,
        min(linked_date) as linked_date
    from ({{ pairs }}) as pairs
    group by 1, 2
),

ranked as (
    select
        *,
        row_number() over (partition by alias_key order by linked_date, person_key) as link_rank
    from first_links
),

first_hops as (
    select
        alias_key,
        person_key,
        linked_date
    from ranked
    where link_rank = 1
),

final as (
    -- An alias of an alias (ECID -> hashed email -> CRMID) belongs to the final person from
    -- the day both links exist. One extra hop covers the namespaces we rank (3 levels).
    select
        first_hops.alias_key,
        coalesce(second_hops.person_key, first_hops.person_key) as person_key,
        case
            when second_hops.person_key is null then first_hops.linked_date
            when second_hops.linked_date > first_hops.linked_date then second_hops.linked_date
            else first_hops.linked_date
        end as linked_date
    from first_hops
    left join first_hops as second_hops
        on first_hops.person_key = second_hops.alias_key
)

select * from final
{%- endmacro %}


{#-
    Post-hook of int_identity_links on DuckDB: the pairs of each file with accepted records,
    one join per file, into a temporary table; then the links from all of them. The model's
    own query selected no pair, so the table is empty until here. Renders no SQL.
-#}
{% macro build_identity_links_by_file() -%}
    {%- if execute and profile_enrichment.events_by_file() -%}
        {%- set pairs = this.identifier ~ '__pairs' -%}
        {%- do run_query(
            'create or replace temporary table ' ~ pairs ~ ' as '
            ~ profile_enrichment.identity_link_pairs(false)) -%}
        {%- set files = run_query(
            'select distinct source_file from ' ~ ref('int_events_accepted') ~ ' order by 1') -%}
        {%- for source_file in files.columns[0].values() -%}
            {%- do run_query(
                'insert into ' ~ pairs ~ ' ' ~ profile_enrichment.identity_link_pairs(source_file)) -%}
        {%- endfor -%}
        {%- do run_query(
            'insert into ' ~ this ~ ' by name '
            ~ profile_enrichment.identity_links_from('select * from ' ~ pairs)) -%}
        {%- do run_query('drop table ' ~ pairs) -%}
    {%- endif -%}
{%- endmacro %}
