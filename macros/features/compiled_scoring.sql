{#-
    Runs a champion compiled to SQL inside the warehouse (ml_scoring_sql: one SELECT per
    model and engine, written by the Python model where Python runs, or loaded by the CLI on
    PostgreSQL). The scorer reads the model's population of customer_features (its
    population_column: has_purchased for churn and lifetime value, is_conversion_eligible for
    conversion), as the Python scoring does.

    output_columns: [(column, type), ...] of the scorer's result, in order; the result gets
    model_name and model_version in front. No champion: a typed empty result.
-#}
{% macro compiled_scores(model_name, compiled_relation, features_relation, output_columns) -%}
    {%- set compiled = none -%}
    {#- the table exists whenever the model runs (it is a parent); not when merely compiled
        on an empty database (sqlfluff, dbt compile), which then sees the empty form -#}
    {%- set exists = execute and adapter.get_relation(
        compiled_relation.database, compiled_relation.schema, compiled_relation.identifier) is not none -%}
    {%- if exists -%}
        {%- set found = run_query(
            "select model_version, population_column, scoring_sql from " ~ compiled_relation
            ~ " where model_name = '" ~ model_name ~ "' and dialect = '" ~ target.type ~ "'") -%}
        {%- if found.rows | length > 1 -%}
            {{ exceptions.raise_compiler_error(compiled_relation ~ " has " ~ (found.rows | length) ~ " " ~ model_name ~ " scorers for " ~ target.type ~ "; expected one") }}
        {%- elif found.rows | length == 1 -%}
            {%- set compiled = found.rows[0] -%}
        {%- endif -%}
    {%- endif -%}
    {%- if compiled is not none -%}
        {%- set population = '(select * from ' ~ features_relation ~ ' where ' ~ compiled[1] ~ ')' -%}
    select
        cast('{{ model_name }}' as {{ profile_enrichment.type_varchar() }}) as model_name,
        cast('{{ compiled[0] }}' as {{ profile_enrichment.type_varchar() }}) as model_version,
        {%- for column, type in output_columns %}
        cast(scored.{{ column }} as {{ type }}) as {{ column }}{{ ',' if not loop.last }}
        {%- endfor %}
    from (
        {{ compiled[2] | replace('__SCORING_POPULATION__', population) }}
    ) as scored
    {%- else -%}
    select
        cast(null as {{ profile_enrichment.type_varchar() }}) as model_name,
        cast(null as {{ profile_enrichment.type_varchar() }}) as model_version,
        {%- for column, type in output_columns %}
        cast(null as {{ type }}) as {{ column }}{{ ',' if not loop.last }}
        {%- endfor %}
    where 1 = 0
    {%- endif -%}
{%- endmacro %}


{#- The columns a compiled propensity scorer returns (ml/sql_scoring.scoring_select_sql). -#}
{% macro compiled_propensity_columns() -%}
    {{ return([
        ('customer_id', profile_enrichment.type_varchar()),
        ('margin', profile_enrichment.type_double()),
        ('probability', profile_enrichment.type_double()),
        ('score', 'integer'),
        ('percentile', 'integer'),
        ('bucket', profile_enrichment.type_varchar()),
    ]) }}
{%- endmacro %}
