{#-
    Aggregate rows into a JSON array of objects, ordered: used to nest lists (top categories)
    into one column of profile_insights. `fields` is a list of (json key, SQL expression) pairs.
-#}
{% macro json_array_agg(fields, order_by) -%}
    {{ return(adapter.dispatch('json_array_agg', 'profile_enrichment')(fields, order_by)) }}
{%- endmacro %}

{% macro duckdb__json_array_agg(fields, order_by) -%}
    cast(to_json(list(struct_pack(
        {%- for key, expression in fields %}
        "{{ key }}" := {{ expression }}{{ "," if not loop.last }}
        {%- endfor %}
    ) order by {{ order_by }})) as varchar)
{%- endmacro %}

{#- jsonb renders keys sorted and with spaces ('[{"rank": 1}]'): the same JSON, other text. -#}
{% macro postgres__json_array_agg(fields, order_by) -%}
    cast(jsonb_agg(jsonb_build_object(
        {%- for key, expression in fields %}
        '{{ key }}', {{ expression }}{{ "," if not loop.last }}
        {%- endfor %}
    ) order by {{ order_by }}) as text)
{%- endmacro %}

{#- Spark: collect (order key, object) pairs, sort by the key, keep the objects; nulls kept. -#}
{% macro spark__json_array_agg(fields, order_by) -%}
    to_json(
        transform(
            array_sort(collect_list(named_struct(
                'sort_key', {{ order_by }},
                'item', named_struct(
                    {%- for key, expression in fields %}
                    '{{ key }}', {{ expression }}{{ "," if not loop.last }}
                    {%- endfor %}
                )
            ))),
            pair -> pair.item
        ),
        map('ignoreNullFields', 'false')
    )
{%- endmacro %}
