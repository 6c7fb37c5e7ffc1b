{#-
    Access to nested XDM fields. Raw events arrive as JSON text (JSON Lines) or as nested
    Parquet rows that the source turns into JSON, so every engine-specific JSON function sits
    behind these dispatch macros. A Postgres or Spark implementation goes beside the DuckDB one.

    Paths are written the way Query Service users write them, dot-separated from the record
    root: xdm_text('event_json', 'commerce.order.priceTotal').
-#}

{% macro xdm_parse_json(raw_text) -%}
    {{ return(adapter.dispatch('xdm_parse_json', 'profile_enrichment')(raw_text)) }}
{%- endmacro %}

{#- try_cast parses once; `case when json_valid(x) then cast(x as json) end` parsed twice (0.14 s vs 0.29 s on 381k events, same results). -#}
{% macro duckdb__xdm_parse_json(raw_text) -%}
    try_cast({{ raw_text }} as json)
{%- endmacro %}

{#- PostgreSQL 15 has no json_valid: pe_try_jsonb (create_engine_functions) returns null instead of failing. -#}
{% macro postgres__xdm_parse_json(raw_text) -%}
    {{ target.schema }}.pe_try_jsonb({{ raw_text }})
{%- endmacro %}


{% macro xdm_text(json_column, path) -%}
    {{ return(adapter.dispatch('xdm_text', 'profile_enrichment')(json_column, path)) }}
{%- endmacro %}

{% macro duckdb__xdm_text(json_column, path) -%}
    json_extract_string({{ json_column }}, '{{ profile_enrichment.xdm_json_path(path) }}')
{%- endmacro %}

{% macro postgres__xdm_text(json_column, path) -%}
    ({{ json_column }} #>> '{{ profile_enrichment.xdm_path_array(path) }}')
{%- endmacro %}


{% macro xdm_json(json_column, path) -%}
    {{ return(adapter.dispatch('xdm_json', 'profile_enrichment')(json_column, path)) }}
{%- endmacro %}

{% macro duckdb__xdm_json(json_column, path) -%}
    {#- '' is the document itself: json_extract(x, '$') would parse and re-render it -#}
    {%- if (path | string | trim) == '' -%}
    {{ json_column }}
    {%- else -%}
    json_extract({{ json_column }}, '{{ profile_enrichment.xdm_json_path(path) }}')
    {%- endif -%}
{%- endmacro %}

{% macro postgres__xdm_json(json_column, path) -%}
    ({{ json_column }} #> '{{ profile_enrichment.xdm_path_array(path) }}')
{%- endmacro %}


{#- The JSON type of a field: 'string', 'number', 'boolean', 'object', 'array', 'null', or null when absent. -#}
{% macro xdm_type(json_column, path) -%}
    {{ return(adapter.dispatch('xdm_type', 'profile_enrichment')(json_column, path)) }}
{%- endmacro %}

{% macro duckdb__xdm_type(json_column, path) -%}
    {{ profile_enrichment.xdm_type_name(
        "json_type(" ~ json_column ~ ", '" ~ profile_enrichment.xdm_json_path(path) ~ "')") }}
{%- endmacro %}

{#- jsonb_typeof already returns the JSON names. -#}
{% macro postgres__xdm_type(json_column, path) -%}
    jsonb_typeof({{ profile_enrichment.postgres__xdm_json(json_column, path) }})
{%- endmacro %}


{#- A number field as double; null when absent or not a JSON number (the type check catches that). -#}
{% macro xdm_number(json_column, path) -%}
    case when {{ profile_enrichment.xdm_type(json_column, path) }} = 'number'
        then cast({{ profile_enrichment.xdm_text(json_column, path) }} as {{ profile_enrichment.type_double() }})
    end
{%- endmacro %}


{#-
    An RFC 3339 date-time string (date, time and a Z or +hh:mm offset are all required) as a
    UTC timestamp without time zone; null when it is not one ('2024-03-01' and
    '2024-03-01T10:00:00' are ambiguous and rejected as unparseable_timestamp).
-#}
{% macro xdm_timestamp_utc(text_expression) -%}
    {{ return(adapter.dispatch('xdm_timestamp_utc', 'profile_enrichment')(text_expression)) }}
{%- endmacro %}

{% macro duckdb__xdm_timestamp_utc(text_expression) -%}
    case when regexp_full_match(
        {{ text_expression }},
        '[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?([Zz]|[+-][0-9]{2}:?[0-9]{2})'
    )
        then cast(timezone('UTC', try_cast(upper({{ text_expression }}) as timestamptz)) as timestamp)
    end
{%- endmacro %}


{#- pe_try_timestamptz (create_engine_functions): null for an impossible date such as Feb 30. -#}
{% macro postgres__xdm_timestamp_utc(text_expression) -%}
    case when {{ text_expression }} ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?([Zz]|[+-][0-9]{2}:?[0-9]{2})$'
        then {{ target.schema }}.pe_try_timestamptz(upper({{ text_expression }})) at time zone 'UTC'
    end
{%- endmacro %}


{#-
    One row per (key, value) of a JSON object or per element of a JSON array, as a lateral
    join: `from events, {{ xdm_each('events.event_json', 'identityMap') }} as namespaces`.
    Columns: key (object key, or array index as text) and value (json).
-#}
{% macro xdm_each(json_column, path) -%}
    {{ return(adapter.dispatch('xdm_each', 'profile_enrichment')(json_column, path)) }}
{%- endmacro %}

{% macro duckdb__xdm_each(json_column, path) -%}
    json_each({{ json_column }}, '{{ profile_enrichment.xdm_json_path(path) }}')
{%- endmacro %}

{#-
    A lateral subquery: jsonb_each for objects, jsonb_array_elements for arrays (keys are the
    0-based positions as text, like DuckDB's json_each). jsonb keeps one value per key (the
    last), where DuckDB's json_each also returns earlier duplicates of a key.
-#}
{% macro postgres__xdm_each(json_column, path) -%}
    {%- set value = profile_enrichment.postgres__xdm_json(json_column, path) -%}
    lateral (
        select object_items.key, object_items.value
        from jsonb_each(case when jsonb_typeof({{ value }}) = 'object' then {{ value }} end) as object_items
        union all
        select cast(array_items.position - 1 as text) as key, array_items.value
        from jsonb_array_elements(case when jsonb_typeof({{ value }}) = 'array' then {{ value }} end)
            with ordinality as array_items (value, position)
    )
{%- endmacro %}


{#- '$' for the record itself, '$.a.b' for a nested field. -#}
{% macro xdm_json_path(path) -%}
    {{- '$' if (path | string | trim) == '' else '$.' ~ path -}}
{%- endmacro %}


{#- PostgreSQL's path array: 'a.b[0].c' -> '{a,b,0,c}'; '' -> '{}' (the document itself). -#}
{% macro xdm_path_array(path) -%}
    {%- set steps = (path | string | trim).replace('[', '.').replace(']', '').split('.') -%}
    {{- '{' ~ (steps | reject('equalto', '') | join(',')) ~ '}' -}}
{%- endmacro %}


{#-
    Several fields of one JSON document in one pass (each call of xdm_text re-parses the
    document; one list extraction parses it once, about 3.5x faster on 650k events).
    xdm_texts returns a list of strings, xdm_types a list of engine type names (map them with
    xdm_type_name); take items with xdm_list_item (1-based).
-#}
{% macro xdm_texts(json_column, paths) -%}
    {{ return(adapter.dispatch('xdm_texts', 'profile_enrichment')(json_column, paths)) }}
{%- endmacro %}

{% macro duckdb__xdm_texts(json_column, paths) -%}
    json_extract_string({{ json_column }}, {{ profile_enrichment.duckdb__xdm_path_list(paths) }})
{%- endmacro %}

{% macro postgres__xdm_texts(json_column, paths) -%}
    array[
        {%- for path in paths %}{{ profile_enrichment.postgres__xdm_text(json_column, path) }}{{ ', ' if not loop.last }}{% endfor -%}
    ]
{%- endmacro %}

{#- A DuckDB list literal of JSON paths: ['$.a', '$.b.c']. -#}
{% macro duckdb__xdm_path_list(paths) -%}
    [{%- for path in paths %}'{{ profile_enrichment.xdm_json_path(path) }}'{{ ', ' if not loop.last }}{% endfor -%}]
{%- endmacro %}


{% macro xdm_types(json_column, paths) -%}
    {{ return(adapter.dispatch('xdm_types', 'profile_enrichment')(json_column, paths)) }}
{%- endmacro %}

{% macro duckdb__xdm_types(json_column, paths) -%}
    json_type({{ json_column }}, {{ profile_enrichment.duckdb__xdm_path_list(paths) }})
{%- endmacro %}

{% macro postgres__xdm_types(json_column, paths) -%}
    array[
        {%- for path in paths %}{{ profile_enrichment.postgres__xdm_type(json_column, path) }}{{ ', ' if not loop.last }}{% endfor -%}
    ]
{%- endmacro %}


{% macro xdm_list_item(list_expression, position) -%}
    {{ return(adapter.dispatch('xdm_list_item', 'profile_enrichment')(list_expression, position)) }}
{%- endmacro %}

{% macro duckdb__xdm_list_item(list_expression, position) -%}
    {{ list_expression }}[{{ position }}]
{%- endmacro %}

{% macro postgres__xdm_list_item(list_expression, position) -%}
    ({{ list_expression }})[{{ position }}]
{%- endmacro %}


{#- Engine JSON type name -> 'string' | 'number' | 'boolean' | 'object' | 'array' | 'null'. -#}
{% macro xdm_type_name(engine_type) -%}
    {{ return(adapter.dispatch('xdm_type_name', 'profile_enrichment')(engine_type)) }}
{%- endmacro %}

{% macro duckdb__xdm_type_name(engine_type) -%}
    case {{ engine_type }}
        when 'VARCHAR' then 'string'
        when 'BIGINT' then 'number'
        when 'UBIGINT' then 'number'
        when 'DOUBLE' then 'number'
        when 'BOOLEAN' then 'boolean'
        when 'OBJECT' then 'object'
        when 'ARRAY' then 'array'
        when 'NULL' then 'null'
    end
{%- endmacro %}

{#- postgres__xdm_types already yields JSON type names. -#}
{% macro postgres__xdm_type_name(engine_type) -%}
    {{ engine_type }}
{%- endmacro %}

{#-
    Spark (4.0+): records are parsed once into a VARIANT (binary JSON), so every path lookup
    below reads the parsed value instead of re-parsing text. try_parse_json gives null for
    invalid JSON (also for duplicate keys, which DuckDB accepts: those records are quarantined
    as invalid_json on Spark). Paths use the same '$.a.b[0]' syntax as DuckDB.
-#}
{% macro spark__xdm_parse_json(raw_text) -%}
    try_parse_json({{ raw_text }})
{%- endmacro %}

{% macro spark__xdm_text(json_column, path) -%}
    try_variant_get({{ json_column }}, '{{ profile_enrichment.xdm_json_path(path) }}', 'string')
{%- endmacro %}

{% macro spark__xdm_json(json_column, path) -%}
    try_variant_get({{ json_column }}, '{{ profile_enrichment.xdm_json_path(path) }}', 'variant')
{%- endmacro %}

{#- schema_of_variant names the type ('STRING', 'DECIMAL(3,2)', 'OBJECT<...>', 'VOID' for null). -#}
{% macro spark__xdm_type(json_column, path) -%}
    {{ profile_enrichment.xdm_type_name(
        "schema_of_variant(" ~ profile_enrichment.spark__xdm_json(json_column, path) ~ ")") }}
{%- endmacro %}

{% macro spark__xdm_timestamp_utc(text_expression) -%}
    case when {{ profile_enrichment.regexp_full_match(
        text_expression,
        '[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?([Zz]|[+-][0-9]{2}:?[0-9]{2})') }}
        then cast(upper({{ text_expression }}) as timestamp)
    end
{%- endmacro %}

{#- variant_explode gives (pos, key, value) with a null key for arrays: the key is the index then. -#}
{% macro spark__xdm_each(json_column, path) -%}
    lateral (
        select coalesce(exploded.key, cast(exploded.pos as string)) as key, exploded.value
        from variant_explode({{ profile_enrichment.spark__xdm_json(json_column, path) }}) as exploded
    )
{%- endmacro %}

{% macro spark__xdm_texts(json_column, paths) -%}
    array(
        {%- for path in paths %}
        {{ profile_enrichment.spark__xdm_text(json_column, path) }}{{ ',' if not loop.last }}
        {%- endfor %}
    )
{%- endmacro %}

{% macro spark__xdm_types(json_column, paths) -%}
    array(
        {%- for path in paths %}
        schema_of_variant({{ profile_enrichment.spark__xdm_json(json_column, path) }}){{ ',' if not loop.last }}
        {%- endfor %}
    )
{%- endmacro %}

{% macro spark__xdm_list_item(list_expression, position) -%}
    element_at({{ list_expression }}, {{ position }})
{%- endmacro %}

{% macro spark__xdm_type_name(engine_type) -%}
    case
        when {{ engine_type }} = 'STRING' then 'string'
        when {{ engine_type }} in ('TINYINT', 'SMALLINT', 'INT', 'BIGINT', 'FLOAT', 'DOUBLE') or {{ engine_type }} like 'DECIMAL%' then 'number'
        when {{ engine_type }} = 'BOOLEAN' then 'boolean'
        when {{ engine_type }} like 'OBJECT%' then 'object'
        when {{ engine_type }} like 'ARRAY%' then 'array'
        when {{ engine_type }} = 'VOID' then 'null'
    end
{%- endmacro %}
