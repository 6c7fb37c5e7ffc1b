{#-
    Windowed aggregates, generated instead of copy-pasted: for every window w in
    var feature_windows_days and every measure m, `<m>_<w>d` = the sum of m over the w days
    before the as-of date. `active_days_<w>d` counts active days.
    Expects columns activity_date and as_of_date in scope, one row per customer, as-of date
    and day (customer_features_as_of's visible_days), so a day count is a plain count.
-#}
{% macro windowed_measures() -%}
    {{ return(['orders', 'revenue', 'page_views', 'product_views', 'cart_adds', 'checkouts',
               'sessions', 'email_opens', 'email_clicks']) }}
{%- endmacro %}

{% macro trend_measures() -%}
    {{ return(['orders', 'revenue', 'page_views', 'sessions']) }}
{%- endmacro %}

{% macro in_window(start_days_before, end_days_before=0) -%}
    activity_date >= {{ dbt.dateadd('day', -start_days_before, 'as_of_date') }}
    {%- if end_days_before > 0 %}
    and activity_date < {{ dbt.dateadd('day', -end_days_before, 'as_of_date') }}
    {%- endif %}
{%- endmacro %}

{% macro windowed_sums() -%}
    {%- set windows = profile_enrichment.validated_int_list_var('feature_windows_days') -%}
    {%- for window in windows %}
        {%- for measure in profile_enrichment.windowed_measures() %}
        {%- if measure == 'revenue' %}
        coalesce({{ profile_enrichment.exact_sum('case when ' ~ profile_enrichment.in_window(window)
            ~ ' then ' ~ measure ~ ' end') }}, 0) as {{ measure }}_{{ window }}d,
        {%- else %}
        cast(coalesce(sum(case when {{ profile_enrichment.in_window(window) }}
            then {{ measure }} end), 0) as bigint) as {{ measure }}_{{ window }}d,
        {%- endif %}
        {%- endfor %}
        cast(count(case when {{ profile_enrichment.in_window(window) }}
            then activity_date end) as bigint) as active_days_{{ window }}d,
    {%- endfor %}
    {%- set trend = profile_enrichment.validated_int_var('trend_window_days', 1, 365) %}
    {%- for measure in profile_enrichment.trend_measures() %}
        {%- set type = profile_enrichment.type_double() if measure == 'revenue' else 'bigint' %}
        {%- set scale = 6 if measure == 'revenue' else 0 %}
        cast(coalesce(sum(case when {{ profile_enrichment.in_window(trend) }}
            then cast({{ measure }} as decimal(38, {{ scale }})) end), 0)
            - coalesce(sum(case when {{ profile_enrichment.in_window(2 * trend, trend) }}
            then cast({{ measure }} as decimal(38, {{ scale }})) end), 0) as {{ type }})
            as {{ measure }}_trend_{{ trend }}d,
    {%- endfor %}
{%- endmacro %}
