{#-
    on-run-start: present the raw files as the `aep` sources, on engines that cannot read them
    in place from the source definition. DuckDB reads them through each source's
    meta.external_location (dbt-duckdb), so there this renders nothing.

    Spark: for each source table with meta.raw_folder, two objects in the source's own schema
    (so source('aep', ...) and the staging models stay unchanged):
      <table>__files  an EXTERNAL table over <raw_dir>/<raw_folder>/ (read in place; dropping
                      it never deletes the files). JSON Lines: the text source with
                      wholetext, one row per file. Parquet: mergeSchema, like DuckDB's
                      union_by_name.
      <table>         the view with the source's columns: source_file, source_row (1-based
                      line or Parquet row), raw_json (JSON text). Lines are split on LF, a
                      trailing CR and a leading BOM are dropped, blank lines stay (staging
                      skips them), as on DuckDB. Parquet rows become to_json(struct(*)) with
                      nulls kept, so absent and null fields look as they do on DuckDB.
    Both are re-created on every run, so a new raw_dir or raw_format takes effect at once.
-#}
{% macro create_raw_sources() -%}
    {{ return(adapter.dispatch('create_raw_sources', 'profile_enrichment')()) }}
{%- endmacro %}

{% macro default__create_raw_sources() -%}
{%- endmacro %}

{% macro spark__create_raw_sources() -%}
    {%- if execute -%}
        {%- set raw_dir = profile_enrichment.validated_path_var('raw_dir') -%}
        {%- set raw_format = profile_enrichment.validated_raw_format() -%}
        {%- set statements = [] -%}
        {%- for node in graph.sources.values()
            if node.package_name == 'profile_enrichment' and node.source_name == 'aep'
            and (node.config.meta or node.meta).get('raw_folder') -%}
            {%- set folder = (node.config.meta or node.meta)['raw_folder'] -%}
            {%- set relation = api.Relation.create(schema=node.schema, identifier=node.identifier) -%}
            {%- set files = api.Relation.create(schema=node.schema, identifier=node.identifier ~ '__files') -%}
            {%- set location = raw_dir.rstrip('/') ~ '/' ~ folder -%}
            {%- set absent = folder == 'profiles' and var('raw_profiles', true) | string | lower in ('false', '0', 'no') -%}
            {%- do statements.append('create schema if not exists ' ~ adapter.quote(node.schema)) -%}
            {%- do statements.append('drop view if exists ' ~ relation) -%}
            {%- do statements.append('drop table if exists ' ~ files) -%}
            {%- if absent -%}
                {%- do statements.append(
                    'create view ' ~ relation ~ ' as select cast(null as string) as source_file, '
                    ~ 'cast(null as bigint) as source_row, cast(null as string) as raw_json where false') -%}
            {%- elif raw_format == 'jsonl' -%}
                {%- do statements.append(
                    "create table " ~ files ~ " using text options (path '" ~ location ~ "', "
                    ~ "pathGlobFilter '*.json*', wholetext 'true')") -%}
                {%- do statements.append(
                    "create view " ~ relation ~ " as select "
                    ~ profile_enrichment.spark__raw_file_path('files._metadata.file_path') ~ " as source_file, "
                    ~ "cast(lines.pos + 1 as bigint) as source_row, "
                    ~ "regexp_replace(lines.line, '^\\\\x{FEFF}|\\\\r$', '') as raw_json "
                    ~ "from " ~ files ~ " as files "
                    ~ "lateral view posexplode(split(files.value, '\\\\n')) lines as pos, line") -%}
            {%- else -%}
                {%- do statements.append(
                    "create table " ~ files ~ " using parquet options (path '" ~ location ~ "', "
                    ~ "pathGlobFilter '*.parquet', mergeSchema 'true')") -%}
                {%- do statements.append(
                    "create view " ~ relation ~ " as select "
                    ~ profile_enrichment.spark__raw_file_path('_metadata.file_path') ~ " as source_file, "
                    ~ "cast(_metadata.row_index + 1 as bigint) as source_row, "
                    ~ "to_json(struct(*), map('ignoreNullFields', 'false')) as raw_json "
                    ~ "from " ~ files) -%}
            {%- endif -%}
        {%- endfor -%}
        {%- for statement in statements -%}
            {%- do run_query(statement) -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}

{#- Spark reports file:/abs/path URIs (URL-encoded); DuckDB the path as given: keep plain paths. -#}
{% macro spark__raw_file_path(uri_column) -%}
    url_decode(regexp_replace({{ uri_column }}, '^file:', ''))
{%- endmacro %}
