{#-
    A sum that does not depend on row order: summing doubles in parallel gives different last
    bits from run to run, which made features (and so model versions) irreproducible. The
    terms are summed as decimals, exactly, then returned as a 64-bit double.
-#}
{% macro exact_sum(expression, scale=6) -%}
    cast(sum(cast({{ expression }} as decimal(38, {{ scale }}))) as {{ profile_enrichment.type_double() }})
{%- endmacro %}
