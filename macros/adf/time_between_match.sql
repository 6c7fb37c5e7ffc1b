{#-
    Query Service TIME_BETWEEN_PREVIOUS_MATCH / TIME_BETWEEN_NEXT_MATCH, emulated as window
    expressions.

      TIME_BETWEEN_PREVIOUS_MATCH(timestamp, eventDefinition, timeUnit) OVER (...)
      TIME_BETWEEN_NEXT_MATCH(timestamp, eventDefinition, timeUnit)     OVER (...)

    Adobe: previous returns "a number representing the unit of time since the previous matching
    event was seen. If no matching event was found, it returns null"; next returns "a negative
    number representing the unit of time behind the next matching event", null when none.
    Units: days, hours, minutes, seconds (default seconds).
    https://experienceleague.adobe.com/en/docs/experience-platform/query/sql/adobe-defined-functions

    Decisions (see _adf__macros.yml for the evidence):
      * The current row counts as a match (Adobe's frames end/start at CURRENT ROW, and the
        matching page itself averages 0.0 in both documented examples).
      * Whole units, truncated toward zero: whole elapsed seconds (adf_elapsed_seconds)
        floor-divided by the unit. The documented averages are exact ratios of whole numbers
        (e.g. 1523/209), which per-row fractions would not give.
      * The window is ordered by the timestamp, then tiebreak_by; a null timestamp gives null and
        never matches.
-#}

{% macro adf_time_between_previous_match(timestamp_column, event_definition, time_unit='seconds', partition_by=none, tiebreak_by=none) -%}
    {%- set order_by = [timestamp_column] + profile_enrichment.adf_column_list(tiebreak_by) -%}
    {%- set matched_at -%}
        (max(case when ({{ event_definition }}) then {{ timestamp_column }} end)
        {{ profile_enrichment.adf_over(partition_by, order_by,
            'rows between unbounded preceding and current row') }})
    {%- endset -%}
    case when {{ timestamp_column }} is not null
        then {{ profile_enrichment.adf_whole_units_between(matched_at, timestamp_column, time_unit) }}
    end
{%- endmacro %}


{% macro adf_time_between_next_match(timestamp_column, event_definition, time_unit='seconds', partition_by=none, tiebreak_by=none) -%}
    {%- set order_by = [timestamp_column] + profile_enrichment.adf_column_list(tiebreak_by) -%}
    {%- set matched_at -%}
        (min(case when ({{ event_definition }}) then {{ timestamp_column }} end)
        {{ profile_enrichment.adf_over(partition_by, order_by,
            'rows between current row and unbounded following') }})
    {%- endset -%}
    case when {{ timestamp_column }} is not null
        then -1 * {{ profile_enrichment.adf_whole_units_between(timestamp_column, matched_at, time_unit) }}
    end
{%- endmacro %}


{#- Seconds in one Adobe time unit: seconds, minutes, hours or days (singular accepted). -#}
{% macro adf_seconds_per_unit(time_unit) -%}
    {%- set units = {'second': 1, 'minute': 60, 'hour': 3600, 'day': 86400} -%}
    {%- set unit = (time_unit | string | trim | lower) -%}
    {%- set unit = unit[:-1] if unit.endswith('s') else unit -%}
    {%- if unit not in units -%}
        {{ exceptions.raise_compiler_error("ADF time unit must be one of seconds, minutes, hours, days; got: " ~ time_unit) }}
    {%- endif -%}
    {{ return(units[unit]) }}
{%- endmacro %}


{#- Whole time units from start to end (end >= start), as bigint; null if either is null. -#}
{% macro adf_whole_units_between(start_timestamp, end_timestamp, time_unit) -%}
    {%- set seconds_per_unit = profile_enrichment.adf_seconds_per_unit(time_unit) -%}
    {%- set elapsed_seconds = profile_enrichment.adf_elapsed_seconds(start_timestamp, end_timestamp) -%}
    {%- if seconds_per_unit == 1 -%}
        cast({{ elapsed_seconds }} as {{ dbt.type_bigint() }})
    {%- else -%}
        cast(floor({{ elapsed_seconds }} / {{ seconds_per_unit }}) as {{ dbt.type_bigint() }})
    {%- endif -%}
{%- endmacro %}


{#-
    Whole seconds elapsed from start to end (end >= start), truncated: the gap SESS_TIMEOUT and
    the time-between functions measure. Shared by sess_timeout.
-#}
{% macro adf_elapsed_seconds(start_timestamp, end_timestamp) -%}
    {{ return(adapter.dispatch('adf_elapsed_seconds', 'profile_enrichment')(start_timestamp, end_timestamp)) }}
{%- endmacro %}

{#- dbt's cross-database datediff. Note: on some engines it counts second boundaries crossed
    rather than elapsed time, which differs by one for sub-second timestamps. -#}
{% macro default__adf_elapsed_seconds(start_timestamp, end_timestamp) -%}
    {{ dbt.datediff(start_timestamp, end_timestamp, 'second') }}
{%- endmacro %}

{#- DuckDB: exact, from integer microseconds. date_diff('second', ...) (what dbt.datediff renders
    here) counts boundaries: 05:13:06.379 -> 05:13:20.071 is 14 by it, 13 elapsed. -#}
{% macro duckdb__adf_elapsed_seconds(start_timestamp, end_timestamp) -%}
    ((epoch_us({{ end_timestamp }}) - epoch_us({{ start_timestamp }})) // 1000000)
{%- endmacro %}

{#- PostgreSQL: the interval's exact (numeric) seconds, truncated. -#}
{% macro postgres__adf_elapsed_seconds(start_timestamp, end_timestamp) -%}
    cast(floor(extract(epoch from ({{ end_timestamp }} - {{ start_timestamp }}))) as {{ dbt.type_bigint() }})
{%- endmacro %}

{#- Spark: exact, from integer microseconds (its datediff counts second boundaries too). -#}
{% macro spark__adf_elapsed_seconds(start_timestamp, end_timestamp) -%}
    ((unix_micros({{ end_timestamp }}) - unix_micros({{ start_timestamp }})) div 1000000)
{%- endmacro %}
