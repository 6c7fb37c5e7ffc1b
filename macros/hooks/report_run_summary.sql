{#-
    on-run-end: one machine-readable line with the ingestion accounting, which the CLI prints
    as its summary. Works on every target, the in-memory one included.
-#}
{% macro report_run_summary() -%}
    {%- if execute -%}
        {%- set staged = adapter.get_relation(target.database, target.schema, 'int_events_validated') -%}
        {%- if staged is not none -%}
            {%- set counts = run_query(
                "select count(*) as records_read, "
                ~ "coalesce(sum(case when is_accepted then 1 else 0 end), 0) as accepted, "
                ~ "coalesce(sum(case when is_accepted then 0 else 1 end), 0) as quarantined "
                ~ "from " ~ staged) -%}
            {%- set reasons = run_query(
                "select reason_code, count(*) as records from " ~ staged
                ~ " where not is_accepted group by 1 order by 2 desc, 1") -%}
            {%- set summary = {
                'records_read': counts.rows[0][0] | int,
                'accepted': counts.rows[0][1] | int,
                'quarantined': counts.rows[0][2] | int,
                'quarantine_reasons': {},
                'target': target.name,
                'warehouse': target.path if target.type == 'duckdb' else target.type,
            } -%}
            {%- for row in reasons.rows -%}
                {%- do summary['quarantine_reasons'].update({row[0]: row[1] | int}) -%}
            {%- endfor -%}
            {%- set as_of = adapter.get_relation(target.database, target.schema, 'int_run_as_of_date') -%}
            {%- if as_of is not none -%}
                {%- set as_of_rows = run_query(
                    "select cast(as_of_date as " ~ dbt.type_string() ~ "), cast(first_event_date as " ~ dbt.type_string() ~ ") from " ~ as_of) -%}
                {%- do summary.update({
                    'as_of_date': as_of_rows.rows[0][0] if as_of_rows.rows else none,
                    'first_event_date': as_of_rows.rows[0][1] if as_of_rows.rows else none,
                }) -%}
            {%- endif -%}
            {{ log('PE_RUN_SUMMARY ' ~ tojson(summary), info=true) }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
