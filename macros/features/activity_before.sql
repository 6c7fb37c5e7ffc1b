{#-
    THE single definition of "what a feature as of D may see": rollup rows of days strictly
    before D, with identities stitched by links already known before D.

    as_of_dates: a relation or CTE with a column as_of_date (one or many dates).
    activity:    a daily rollup with identity_key and activity_date.
    Returns one row per (customer_id, as_of_date, rollup row).

    Every feature model (current features, training snapshots, category affinity) goes
    through here, so they cannot drift apart.
-#}
{% macro activity_before(as_of_dates, activity) -%}
    select
        coalesce(
            case when links.linked_date < dates.as_of_date then links.person_key end,
            activity.identity_key
        ) as customer_id,
        dates.as_of_date,
        activity.*
    from {{ activity }} as activity
    inner join {{ as_of_dates }} as dates
        on activity.activity_date < dates.as_of_date
    left join {{ ref('int_identity_links') }} as links
        on activity.identity_key = links.alias_key
{%- endmacro %}
