{#-
    Which as-of dates customer_feature_snapshots builds in this run, and how.

    pending_snapshot_dates(): the window's dates (int_snapshot_dates) that are not in the table
    yet, plus those that can see a day the daily rollup rewrote in this run (the rollup's
    pre-hook writes the first such day to int_identity_daily_activity_watermark). On a full
    build, every date.

    On DuckDB the dates are built one statement per date (a post-hook: delete the date's rows,
    insert them), instead of all dates in one query. One query holds every customer's features
    for every date at once: at 18.6M events (1M customers, 18 dates) it spilled tens of GB to
    disk and filled it. One date at a time holds one date's worth. PostgreSQL and Spark keep the
    single query (Spark's Parquet tables have no delete; there insert_overwrite replaces whole
    date partitions).
-#}
{% macro snapshots_date_by_date() -%}
    {{ return(adapter.dispatch('snapshots_date_by_date', 'profile_enrichment')()) }}
{%- endmacro %}

{% macro default__snapshots_date_by_date() -%}
    {{ return(false) }}
{%- endmacro %}

{% macro duckdb__snapshots_date_by_date() -%}
    {{ return(true) }}
{%- endmacro %}


{% macro pending_snapshot_dates() -%}
    {#- Written by the rollup's pre-hook: the first day it rewrites in this run (null = all). -#}
    {%- set watermark = adapter.get_relation(this.database, this.schema, 'int_identity_daily_activity_watermark') if execute else none -%}
    select as_of_date from {{ ref('int_snapshot_dates') }}
    {%- if is_incremental() %}
    where as_of_date not in (select distinct as_of_date from {{ this }})
        -- a snapshot that can see a day the rollup rewrote in this run is recomputed whole
        {%- if watermark is not none %}
        or as_of_date > (
            select coalesce(min(rewritten_from_date), cast('1900-01-01' as date))
            from {{ watermark }}
        )
        {%- else %}
        or true
        {%- endif %}
    {%- endif %}
{%- endmacro %}


{#-
    Post-hook of customer_feature_snapshots where snapshots_date_by_date() (DuckDB): the model's
    own query then selects no date, and this builds each pending date in its own statements,
    inside the model's transaction (a failure rolls the whole model back). Renders no SQL.
-#}
{% macro build_snapshots_date_by_date() -%}
    {%- if execute and profile_enrichment.snapshots_date_by_date() -%}
        {#- The model's own query added no row, so "not in the table yet" still holds. A full
            build (is_incremental() false) has just created the table empty: every date. -#}
        {%- set pending = run_query(
            'select as_of_date from (' ~ profile_enrichment.pending_snapshot_dates() ~ ') as pending order by 1') -%}
        {%- for as_of_date in pending.columns[0].values() -%}
            {%- set one_date = "(select cast('" ~ as_of_date ~ "' as date) as as_of_date)" -%}
            {%- do run_query(
                'delete from ' ~ this ~ " where as_of_date = cast('" ~ as_of_date ~ "' as date)") -%}
            {%- do run_query(
                'insert into ' ~ this ~ ' by name '
                ~ profile_enrichment.customer_features_as_of(one_date)) -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}
