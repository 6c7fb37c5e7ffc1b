{#-
    SESS_TIMEOUT(timestamp, expirationInSeconds) OVER (PARTITION BY ... ORDER BY timestamp)

    Query Service returns a struct (timestamp_diff, num, is_new, depth). SQL macros cannot
    return a struct portably, so this macro wraps a relation and adds four columns:

      <prefix>_timestamp_diff  seconds since the previous event of the partition (0 for the first)
      <prefix>_num             session number within the partition, from 1
      <prefix>_is_new          true for the first event of a session
      <prefix>_depth           position of the event within its session, from 1
      <prefix>_previous_timestamp  the previous event's timestamp in the partition (helper column)

    A new session starts when the gap to the previous event reaches expiration_seconds
    (gap >= expiration_seconds): Adobe defines expirationInSeconds as "the number of seconds
    needed between events to qualify the end of the current session and the start of a new
    session", and its example shows timestamp_diff = 0 for the first event (0,1,true,1).
    https://experienceleague.adobe.com/en/docs/experience-platform/query/sql/adobe-defined-functions
    Gaps are whole elapsed seconds, truncated (adf_elapsed_seconds), so with a whole-second
    timeout the split is exact even for sub-second timestamps. Rows whose timestamp is null get
    null session columns and do not break other sessions.

    Usage (in a CTE):  sessionized as ({{ sess_timeout('events', 'event_at', 1800, ['person_id']) }})
-#}
{% macro sess_timeout(relation, timestamp_column, expiration_seconds, partition_by, tiebreak_by=none, prefix='session') -%}
    {%- set partition_sql = profile_enrichment.adf_column_list(partition_by) | join(', ') -%}
    {%- set order_sql = ([timestamp_column] + profile_enrichment.adf_column_list(tiebreak_by)) | join(', ') -%}
    select
        with_session_numbers.*,
        case when {{ timestamp_column }} is not null
            then row_number() over (
                partition by {{ partition_sql }}, {{ timestamp_column }} is null, {{ prefix }}_num
                order by {{ order_sql }}
            )
        end as {{ prefix }}_depth
    from (
        select
            with_gaps.*,
            case when {{ timestamp_column }} is not null
                then cast(sum(case when {{ prefix }}_is_new then 1 else 0 end) over (
                    partition by {{ partition_sql }}, {{ timestamp_column }} is null
                    order by {{ order_sql }}
                    rows between unbounded preceding and current row
                ) as {{ dbt.type_bigint() }})
            end as {{ prefix }}_num
        from (
            select
                with_previous.*,
                case when {{ timestamp_column }} is not null
                    then coalesce(
                        {{ profile_enrichment.adf_elapsed_seconds(prefix ~ '_previous_timestamp', timestamp_column) }}, 0
                    )
                end as {{ prefix }}_timestamp_diff,
                case when {{ timestamp_column }} is not null
                    then {{ prefix }}_previous_timestamp is null
                        or {{ profile_enrichment.adf_elapsed_seconds(prefix ~ '_previous_timestamp', timestamp_column) }}
                        >= {{ expiration_seconds }}
                end as {{ prefix }}_is_new
            from (
                select
                    {{ relation }}.*,
                    lag({{ timestamp_column }}) over (
                        partition by {{ partition_sql }}, {{ timestamp_column }} is null
                        order by {{ order_sql }}
                    ) as {{ prefix }}_previous_timestamp
                from {{ relation }}
            ) as with_previous
        ) as with_gaps
    ) as with_session_numbers
{%- endmacro %}
