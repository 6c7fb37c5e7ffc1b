{#-
    Query Service PREVIOUS / NEXT (pathing), emulated as window expressions.

      PREVIOUS(key, shift, ignoreNulls) OVER (PARTITION BY ... ORDER BY ...)
      NEXT(key, shift, ignoreNulls)     OVER (PARTITION BY ... ORDER BY ...)

    Adobe: "Determines the previous (next) value of a particular field a defined number of steps
    away within the window." shift defaults to 1, ignoreNulls to false; with ignoreNulls, rows
    whose key is null are skipped when counting the steps (NEXT(name, 1, true) on Adobe's example
    returns the next non-null page name).
    https://experienceleague.adobe.com/en/docs/experience-platform/query/sql/adobe-defined-functions

    Usage:  {{ profile_enrichment.adf_previous('page_name', 1, partition_by=['identity_key'],
                                                order_by=['event_at', 'event_id']) }} as previous_page

    This file also holds the two small helpers every ADF macro uses (adf_column_list, adf_over).
-#}

{#- none, one column name, or a list of them -> a list -#}
{% macro adf_column_list(columns) -%}
    {%- if columns is none -%}
        {{ return([]) }}
    {%- elif columns is string -%}
        {{ return([columns]) }}
    {%- else -%}
        {{ return(columns | list) }}
    {%- endif -%}
{%- endmacro %}


{#- An OVER clause from column lists and an optional frame. -#}
{% macro adf_over(partition_by=none, order_by=none, frame=none) -%}
    {%- set partitions = profile_enrichment.adf_column_list(partition_by) -%}
    {%- set orders = profile_enrichment.adf_column_list(order_by) -%}
    over (
        {%- if partitions %}partition by {{ partitions | join(', ') }}{% endif -%}
        {%- if orders %}{{ ' ' if partitions }}order by {{ orders | join(', ') }}{% endif -%}
        {%- if frame %} {{ frame }}{% endif -%}
    )
{%- endmacro %}


{% macro adf_previous(key, shift=1, ignore_nulls=false, partition_by=none, order_by=none) -%}
    {{ return(profile_enrichment.adf_shifted_value('lag', key, shift, ignore_nulls, partition_by, order_by)) }}
{%- endmacro %}


{% macro adf_next(key, shift=1, ignore_nulls=false, partition_by=none, order_by=none) -%}
    {{ return(profile_enrichment.adf_shifted_value('lead', key, shift, ignore_nulls, partition_by, order_by)) }}
{%- endmacro %}


{#- Shared by adf_previous / adf_next: validates the arguments, then dispatches. -#}
{% macro adf_shifted_value(function_name, key, shift, ignore_nulls, partition_by, order_by) -%}
    {%- if function_name not in ('lag', 'lead') -%}
        {{ exceptions.raise_compiler_error("adf_shifted_value: function_name must be 'lag' or 'lead', got: " ~ function_name) }}
    {%- endif -%}
    {%- if shift is not integer or shift < 1 -%}
        {{ exceptions.raise_compiler_error("adf_previous/adf_next: shift must be a whole number >= 1, got: " ~ shift) }}
    {%- endif -%}
    {%- if ignore_nulls not in (true, false) -%}
        {{ exceptions.raise_compiler_error("adf_previous/adf_next: ignore_nulls must be true or false, got: " ~ ignore_nulls) }}
    {%- endif -%}
    {%- if not profile_enrichment.adf_column_list(order_by) -%}
        {{ exceptions.raise_compiler_error("adf_previous/adf_next on '" ~ key ~ "': order_by is required (e.g. ['event_at', 'event_id'])") }}
    {%- endif -%}
    {{ return(adapter.dispatch('adf_shifted_value', 'profile_enrichment')(function_name, key, shift, ignore_nulls, partition_by, order_by)) }}
{%- endmacro %}


{#- SQL:2011 puts IGNORE NULLS after the call: lag(x, 2) ignore nulls over (...). -#}
{% macro default__adf_shifted_value(function_name, key, shift, ignore_nulls, partition_by, order_by) -%}
    {{ function_name }}({{ key }}, {{ shift }}){{ ' ignore nulls' if ignore_nulls }}
    {{- ' ' ~ profile_enrichment.adf_over(partition_by, order_by) }}
{%- endmacro %}


{#- DuckDB puts IGNORE NULLS inside the call: lag(x, 2 ignore nulls) over (...). -#}
{% macro duckdb__adf_shifted_value(function_name, key, shift, ignore_nulls, partition_by, order_by) -%}
    {{ function_name }}({{ key }}, {{ shift }}{{ ' ignore nulls' if ignore_nulls }})
    {{- ' ' ~ profile_enrichment.adf_over(partition_by, order_by) }}
{%- endmacro %}


{#-
    PostgreSQL has no IGNORE NULLS for lag/lead. With it, the non-null values are collected
    from the frame on the needed side, nearest first, and the shift-th is taken: for lag the
    window runs in reverse order over the following rows (= the preceding ones, nearest first).
    Quadratic in the partition's length; partitions here are one person's events.
-#}
{% macro postgres__adf_shifted_value(function_name, key, shift, ignore_nulls, partition_by, order_by) -%}
    {%- if not ignore_nulls -%}
        {{ profile_enrichment.default__adf_shifted_value(function_name, key, shift, ignore_nulls, partition_by, order_by) }}
    {%- else -%}
        {%- set orders = profile_enrichment.adf_column_list(order_by) -%}
        {%- if function_name == 'lag' -%}
            {%- set reversed = [] -%}
            {%- for column in orders -%}
                {%- if ' ' in (column | trim) -%}
                    {{ exceptions.raise_compiler_error("adf_previous with ignore_nulls on postgres: order_by takes plain column names, got: " ~ column) }}
                {%- endif -%}
                {%- do reversed.append(column ~ ' desc') -%}
            {%- endfor -%}
            {%- set orders = reversed -%}
        {%- endif -%}
        (array_remove(array_agg({{ key }}) {{ profile_enrichment.adf_over(partition_by, orders,
            'rows between 1 following and unbounded following') }}, null))[{{ shift }}]
    {%- endif -%}
{%- endmacro %}
