{#- Small generic tests we need (dbt hub packages such as dbt_utils are not reachable here). -#}

{#- The combination of columns is unique (a compound primary key). -#}
{% test unique_combination_of_columns(model, combination_of_columns) %}
    select
        {{ combination_of_columns | join(', ') }},
        count(*) as copies
    from {{ model }}
    group by {{ combination_of_columns | join(', ') }}
    having count(*) > 1
{% endtest %}


{#- Every non-null value lies within [min_value, max_value] (either bound optional). -#}
{% test value_between(model, column_name, min_value=none, max_value=none) %}
    select {{ column_name }}
    from {{ model }}
    where {{ column_name }} is not null
        and (
            false
            {%- if min_value is not none %} or {{ column_name }} < {{ min_value }}{% endif %}
            {%- if max_value is not none %} or {{ column_name }} > {{ max_value }}{% endif %}
        )
{% endtest %}


{#- Every row of the model has a parent row in `to` with the same values in the given columns. -#}
{% test relationships_multi(model, to, columns) %}
    select child.*
    from {{ model }} as child
    left join {{ to }} as parent
        on {% for column in columns %}child.{{ column }} = parent.{{ column }}{% if not loop.last %} and {% endif %}{% endfor %}
    where parent.{{ columns[0] }} is null
{% endtest %}
