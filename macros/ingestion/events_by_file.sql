{#-
    Validation and the accepted stream, one raw file at a time.

    int_events_validated and int_events_accepted join every record with its identities and
    product lines by record_id. In one query, the hash tables hold every record at once: at
    92.9M events (48 files) DuckDB spilled more than 43 GB and filled the disk, and at 19.5M
    events with a 1.6 GB memory limit it spilled 8.7 GB. No record's checks depend on another
    file, except the duplicate check, so on DuckDB the two models are built file by file
    (post-hooks, inside the model's transaction; the model's own query selects no file) and
    are incremental by file like staging: a night validates only the files not validated yet.

    Duplicates across files: the first copy of an event_id (by source_file, then source_row)
    among the records that pass every other check is accepted, the later ones are quarantined
    as duplicate_event_id. After the files are inserted, one statement re-ranks only the
    event_ids that occur more than once (found by a narrow aggregate on hash(event_id)), so a new
    file that sorts before an older one takes the first copy over, as a full build would.
    int_events_accepted then rebuilds exactly the files whose set of accepted records changed
    (a per-file count and sum of hash(record_id), compared with its own table).

    PostgreSQL (raw tables reloaded by every run) and Spark (no delete on Parquet) build both
    models as tables, in one query each.
-#}
{% macro events_by_file() -%}
    {%- set wanted = var('events_by_file', true) | string | lower not in ('false', '0', 'no') -%}
    {{ return(wanted and profile_enrichment.staging_materialization() == 'incremental') }}
{%- endmacro %}


{#- The materialization of a model built by file where events_by_file(), else in one query. -#}
{% macro by_file_materialization() -%}
    {{ return('incremental' if profile_enrichment.events_by_file() else 'table') }}
{%- endmacro %}


{#- A condition on source_file: one file (a string), every file (none), or none (false). -#}
{% macro source_file_condition(source_file) -%}
    {%- if source_file is none -%}
        true
    {%- elif source_file is sameas false -%}
        false
    {%- else -%}
        source_file = '{{ source_file | replace("'", "''") }}'
    {%- endif -%}
{%- endmacro %}


{#- The rows of model `model_name` that come from `source_file` (as source_file_condition). -#}
{% macro file_rows(model_name, source_file) -%}
    select * from {{ ref(model_name) }}
    where {{ profile_enrichment.source_file_condition(source_file) }}
{%- endmacro %}


{#- The raw files staged (stg_aep__experience_events) that `relation` has no row of, in order. -#}
{% macro files_missing_from(relation) -%}
    {%- set missing = run_query(
        'select distinct source_file from ' ~ ref('stg_aep__experience_events')
        ~ ' except select distinct source_file from ' ~ relation ~ ' order by 1') -%}
    {{ return(missing.columns[0].values() | list) }}
{%- endmacro %}


{#-
    Post-hook of int_events_validated on DuckDB: validate each file not validated yet (all on
    a full build), then settle duplicates across files. Renders no SQL. While the ingestion
    clock is not pinned (var ingestion_clock empty: now), a file holding records quarantined
    as future_timestamp is validated again, since with time passing they may have become valid.
-#}
{% macro build_validated_by_file() -%}
    {%- if execute and profile_enrichment.events_by_file() -%}
        {%- if not profile_enrichment.validated_date_var('ingestion_clock') -%}
            {%- set moving = run_query(
                'select distinct source_file from ' ~ this
                ~ " where reason_codes like '%future_timestamp%' order by 1") -%}
            {%- for source_file in moving.columns[0].values() -%}
                {%- do run_query(
                    'delete from ' ~ this ~ ' where ' ~ profile_enrichment.source_file_condition(source_file)) -%}
            {%- endfor -%}
        {%- endif -%}
        {%- set pending = profile_enrichment.files_missing_from(this) -%}
        {%- for source_file in pending -%}
            {%- do run_query(
                'insert into ' ~ this ~ ' by name select '
                ~ profile_enrichment.validated_columns('1') ~ ' from ('
                ~ profile_enrichment.events_checked(source_file) ~ ') as checked') -%}
        {%- endfor -%}
        {%- if pending | length > 0 -%}
            {%- do run_query(profile_enrichment.settle_duplicates_across_files()) -%}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}


{#-
    One statement that gives each event_id's first copy (by source_file, source_row) among the
    records passing every other check its acceptance, and the later copies duplicate_event_id.
    Only event_ids occurring more than once are ranked; only rows whose outcome changes are
    written. DuckDB only (hash, update ... from).
-#}
{% macro settle_duplicates_across_files() -%}
update {{ this }} as validated
set
    reason_codes = case when ranked.copy_number > 1 then 'duplicate_event_id' else '' end,
    reason_code = case when ranked.copy_number > 1 then 'duplicate_event_id' end,
    is_accepted = ranked.copy_number = 1
from (
    select
        record_id,
        row_number() over (partition by event_id order by source_file, source_row) as copy_number
    from {{ this }}
    where
        reason_codes in ('', 'duplicate_event_id')
        and hash(event_id) in (
            select hash(event_id)
            from {{ this }}
            where reason_codes in ('', 'duplicate_event_id')
            group by 1
            having count(*) > 1
        )
) as ranked
where
    validated.record_id = ranked.record_id
    and validated.is_accepted <> (ranked.copy_number = 1)
{%- endmacro %}


{#-
    Post-hook of int_events_accepted on DuckDB: rebuild the files whose accepted records differ
    from the table's (new files, files that lost or gained a first copy, files no longer staged
    with accepted rows). Renders no SQL.
-#}
{% macro build_accepted_by_file() -%}
    {%- if execute and profile_enrichment.events_by_file() -%}
        {%- set changed = run_query(
            "with wanted as (select source_file, count(*) as n, sum(hash(record_id)) as h from "
            ~ ref('int_events_validated') ~ " where is_accepted group by 1), "
            ~ "held as (select source_file, count(*) as n, sum(hash(record_id)) as h from "
            ~ this ~ " group by 1) "
            ~ "select coalesce(wanted.source_file, held.source_file) from wanted "
            ~ "full outer join held on wanted.source_file = held.source_file "
            ~ "where wanted.n is distinct from held.n or wanted.h is distinct from held.h order by 1") -%}
        {%- for source_file in changed.columns[0].values() -%}
            {%- do run_query(
                'delete from ' ~ this ~ " where " ~ profile_enrichment.source_file_condition(source_file)) -%}
            {%- do run_query(
                'insert into ' ~ this ~ ' by name ' ~ profile_enrichment.accepted_events(source_file)) -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}
