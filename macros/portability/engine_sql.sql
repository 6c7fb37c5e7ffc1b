{#-
    Small spellings that differ between engines, so models stay the same everywhere.
    Each has the DuckDB form and the PostgreSQL (or default) form beside it.
-#}

{#- A 64-bit float. dbt.type_float() is 32-bit on DuckDB and Spark, so it is never used. -#}
{% macro type_double() -%}
    {{ return(adapter.dispatch('type_double', 'profile_enrichment')()) }}
{%- endmacro %}

{% macro default__type_double() -%}
    double
{%- endmacro %}

{% macro postgres__type_double() -%}
    double precision
{%- endmacro %}


{#-
    The type the contracts call `varchar`. dbt.type_string() is `text` on PostgreSQL, which an
    incremental run then reports as a schema change against a contracted varchar column.
-#}
{% macro type_varchar() -%}
    {{ return(adapter.dispatch('type_varchar', 'profile_enrichment')()) }}
{%- endmacro %}

{% macro default__type_varchar() -%}
    varchar
{%- endmacro %}

{#- Spark accepts varchar only with a length: its string type. -#}
{% macro spark__type_varchar() -%}
    string
{%- endmacro %}


{#- The length of a text in UTF-8 bytes (the size AEP counts), not characters. -#}
{% macro text_bytes(expression) -%}
    {{ return(adapter.dispatch('text_bytes', 'profile_enrichment')(expression)) }}
{%- endmacro %}

{% macro duckdb__text_bytes(expression) -%}
    strlen({{ expression }})
{%- endmacro %}

{% macro default__text_bytes(expression) -%}
    octet_length({{ expression }})
{%- endmacro %}


{#- Whole days from start_date to end_date as bigint on every engine (dbt.datediff gives int on PostgreSQL). -#}
{% macro days_between(start_date, end_date) -%}
    cast({{ dbt.datediff(start_date, end_date, 'day') }} as {{ dbt.type_bigint() }})
{%- endmacro %}
