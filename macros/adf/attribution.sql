{#-
    Query Service ATTRIBUTION_FIRST_TOUCH / ATTRIBUTION_LAST_TOUCH and their _EXP_TIMEOUT
    variants, emulated as relation-wrapping macros (same style as sess_timeout).

      ATTRIBUTION_FIRST_TOUCH(timestamp, channelName, channelValue) OVER (...)
      ATTRIBUTION_LAST_TOUCH(timestamp, channelName, channelValue)  OVER (...)
      ATTRIBUTION_FIRST_TOUCH_EXP_TIMEOUT(timestamp, channelName, channelValue, expTimeout) OVER (...)
      ATTRIBUTION_LAST_TOUCH_EXP_TIMEOUT(timestamp, channelName, channelValue, expTimeout)  OVER (...)

    Adobe returns a struct (name, value, timestamp, fraction). A macro cannot return a struct
    portably, and the _exp_timeout first touch needs a time-ranged window plus a look-up of the
    chosen touch, so each macro wraps a relation and adds four columns:

      <prefix>_name       channel_name (Adobe's label), null when no touch is credited
      <prefix>_value      the credited touch's channel value
      <prefix>_timestamp  the credited touch's timestamp
      <prefix>_fraction   1.0 (first and last touch give the touch all the credit), else null

    and two helper columns: <prefix>_seq (1-based position of the row in its partition, by
    timestamp then tiebreak_by) and <prefix>_touch_seq (position of the credited touch).

    A touch is a row whose timestamp and channel value are both not null. For each row, only
    touches at or before it (in timestamp, tiebreak order) are candidates:
      first touch             the earliest candidate
      last touch              the latest candidate
      first touch exp timeout the earliest candidate no older than exp_timeout_seconds
      last touch exp timeout  the latest candidate, if it is no older than exp_timeout_seconds
    "No older than": touch timestamp >= row timestamp - exp_timeout_seconds (inclusive).
    Rows with a null timestamp are credited nothing.

    https://experienceleague.adobe.com/en/docs/experience-platform/query/use-cases/attribution-analysis
    (formerly in .../query/sql/adobe-defined-functions; see _adf__macros.yml for what the docs say
    and where their examples contradict themselves).

    Usage (in a CTE):
      first_touched as ({{ profile_enrichment.adf_attribution_first_touch(
          'events', 'event_at', 'channel', 'touch_channel', partition_by=['identity_key'],
          tiebreak_by=['event_id']) }})
-#}

{% macro adf_attribution_first_touch(relation, timestamp_column, channel_name, channel_value, partition_by, tiebreak_by=none, prefix='first_touch') -%}
    {{ return(profile_enrichment.adf_attribution(relation, timestamp_column, channel_name, channel_value,
        'first', partition_by, tiebreak_by, none, prefix)) }}
{%- endmacro %}


{% macro adf_attribution_last_touch(relation, timestamp_column, channel_name, channel_value, partition_by, tiebreak_by=none, prefix='last_touch') -%}
    {{ return(profile_enrichment.adf_attribution(relation, timestamp_column, channel_name, channel_value,
        'last', partition_by, tiebreak_by, none, prefix)) }}
{%- endmacro %}


{% macro adf_attribution_first_touch_exp_timeout(relation, timestamp_column, channel_name, channel_value, exp_timeout_seconds, partition_by, tiebreak_by=none, prefix='first_touch_exp_timeout') -%}
    {{ return(profile_enrichment.adf_attribution(relation, timestamp_column, channel_name, channel_value,
        'first', partition_by, tiebreak_by, exp_timeout_seconds, prefix)) }}
{%- endmacro %}


{% macro adf_attribution_last_touch_exp_timeout(relation, timestamp_column, channel_name, channel_value, exp_timeout_seconds, partition_by, tiebreak_by=none, prefix='last_touch_exp_timeout') -%}
    {{ return(profile_enrichment.adf_attribution(relation, timestamp_column, channel_name, channel_value,
        'last', partition_by, tiebreak_by, exp_timeout_seconds, prefix)) }}
{%- endmacro %}


{#- The engine behind the four ADF macros above. -#}
{% macro adf_attribution(relation, timestamp_column, channel_name, channel_value, touch, partition_by, tiebreak_by=none, exp_timeout_seconds=none, prefix=none) -%}
    {%- if touch not in ('first', 'last') -%}
        {{ exceptions.raise_compiler_error("adf_attribution: touch must be 'first' or 'last', got: " ~ touch) }}
    {%- endif -%}
    {%- if exp_timeout_seconds is not none and (exp_timeout_seconds is not integer or exp_timeout_seconds < 0) -%}
        {{ exceptions.raise_compiler_error("adf_attribution: exp_timeout_seconds must be a whole number of seconds >= 0, got: " ~ exp_timeout_seconds) }}
    {%- endif -%}
    {%- set p = prefix or (touch ~ '_touch' ~ ('_exp_timeout' if exp_timeout_seconds is not none else '')) -%}
    {%- set partitions = profile_enrichment.adf_column_list(partition_by) -%}
    {%- set order_by = [timestamp_column] + profile_enrichment.adf_column_list(tiebreak_by) -%}
    {%- set is_touch = '(' ~ timestamp_column ~ ' is not null and (' ~ channel_value ~ ') is not null)' -%}
    {%- set touch_seq = 'case when ' ~ is_touch ~ ' then ' ~ p ~ '_seq end' -%}
    {%- set up_to_here = profile_enrichment.adf_over(partitions, [p ~ '_seq'],
        'rows between unbounded preceding and current row') -%}
    {%- set label = "'" ~ (channel_name | replace("'", "''")) ~ "'" -%}
    with

    {{ p }}__numbered as (
        select
            {{ relation }}.*,
            row_number() {{ profile_enrichment.adf_over(partitions, order_by) }} as {{ p }}_seq
        from {{ relation }}
    ),

    {{ p }}__chosen as (
        select
            {{ p }}__numbered.*,
            case when {{ timestamp_column }} is not null then
            {%- if exp_timeout_seconds is none %}
                {{ 'min' if touch == 'first' else 'max' }}({{ touch_seq }}) {{ up_to_here }}
            {%- elif touch == 'last' %}
                case
                    when max(case when {{ is_touch }} then {{ timestamp_column }} end) {{ up_to_here }}
                        >= {{ dbt.dateadd('second', -exp_timeout_seconds, timestamp_column) }}
                        then max({{ touch_seq }}) {{ up_to_here }}
                end
            {%- else %}
                {%- set in_timeout = profile_enrichment.adf_over(partitions, [timestamp_column],
                    profile_enrichment.adf_range_frame_seconds_preceding(exp_timeout_seconds)) %}
                {#- The range frame also holds same-timestamp rows after this one; if its
                    earliest touch is one of those, no touch at or before this row is left. #}
                case
                    when min({{ touch_seq }}) {{ in_timeout }} <= {{ p }}_seq
                        then min({{ touch_seq }}) {{ in_timeout }}
                end
            {%- endif %}
            end as {{ p }}_touch_seq
        from {{ p }}__numbered
    ),

    {{ p }}__touches as (
        select
            {%- for column in partitions %}
            {{ column }},
            {%- endfor %}
            {{ p }}_seq as {{ p }}__touch_seq,
            {{ timestamp_column }} as {{ p }}__touch_at,
            ({{ channel_value }}) as {{ p }}__touch_value
        from {{ p }}__numbered
        where {{ is_touch }}
    )

    select
        {{ p }}__chosen.*,
        case when {{ p }}__touches.{{ p }}__touch_seq is not null then {{ label }} end as {{ p }}_name,
        {{ p }}__touches.{{ p }}__touch_value as {{ p }}_value,
        {{ p }}__touches.{{ p }}__touch_at as {{ p }}_timestamp,
        case when {{ p }}__touches.{{ p }}__touch_seq is not null then 1.0 end as {{ p }}_fraction
    from {{ p }}__chosen
    left join {{ p }}__touches
        on
            {%- for column in partitions %}
            {{ p }}__chosen.{{ column }} is not distinct from {{ p }}__touches.{{ column }} and
            {%- endfor %}
            {{ p }}__chosen.{{ p }}_touch_seq = {{ p }}__touches.{{ p }}__touch_seq
{%- endmacro %}


{#- A RANGE frame from `seconds` before the current row's order value to the current row. -#}
{% macro adf_range_frame_seconds_preceding(seconds) -%}
    {{ return(adapter.dispatch('adf_range_frame_seconds_preceding', 'profile_enrichment')(seconds)) }}
{%- endmacro %}

{#- SQL-standard interval literal (Postgres, Spark, Snowflake accept it); needs a literal number. -#}
{% macro default__adf_range_frame_seconds_preceding(seconds) -%}
    range between interval '{{ seconds }}' second preceding and current row
{%- endmacro %}

{#- DuckDB also takes an expression: interval (86400 * 7) second. -#}
{% macro duckdb__adf_range_frame_seconds_preceding(seconds) -%}
    range between interval ({{ seconds }}) second preceding and current row
{%- endmacro %}
