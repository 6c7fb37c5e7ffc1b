{#-
    Small functions an engine lacks, created in the target schema before every run
    (on-run-start). DuckDB and Spark need none.

    PostgreSQL 15:
      pe_try_jsonb(text)        the text as jsonb, or null when it is not valid JSON
                                (DuckDB: json_valid + cast); jsonb refuses \u0000 in strings,
                                so such a record is quarantined as invalid_json there.
      pe_try_timestamptz(text)  the text as timestamptz, or null when it is not a real
                                date-time (DuckDB: try_cast)
    Both catch the cast error in a subtransaction, so they are not parallel safe.
    pe_try_jsonb is declared volatile on purpose: PostgreSQL then keeps the staging CTE that
    parses each record once, instead of inlining the call into every field extraction (15
    parses per record: 56 s instead of 5.6 s for 40k events).
-#}
{% macro create_engine_functions() -%}
    {{ return(adapter.dispatch('create_engine_functions', 'profile_enrichment')()) }}
{%- endmacro %}

{% macro default__create_engine_functions() -%}
    select 1
{%- endmacro %}

{% macro postgres__create_engine_functions() -%}
    {#- (name, result type, volatility): see the header for why pe_try_jsonb is volatile -#}
    {%- set functions = [('pe_try_jsonb', 'jsonb', 'volatile'), ('pe_try_timestamptz', 'timestamptz', 'stable')] -%}
    create schema if not exists {{ target.schema }};
    {%- for name, result_type, volatility in functions %}
    create or replace function {{ target.schema }}.{{ name }}(raw text) returns {{ result_type }}
    language plpgsql {{ volatility }} as $pe$
    begin
        return raw::{{ result_type }};
    exception when others then
        return null;
    end
    $pe${{ ';' if not loop.last }}
    {%- endfor %}
{%- endmacro %}
