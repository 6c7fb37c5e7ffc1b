{#-
    Every raw record of `source_file` (one file's name; none = every file; false = no file)
    with the checks it fails: the columns of int_events_validated plus reasons_before_dedup,
    the comma-separated reason codes of every check except the duplicate check (empty = clean).
    Reason codes and their precedence live in the quarantine_reasons seed.
-#}
{% macro events_checked(source_file=none) -%}
    {%- set min_event_date = profile_enrichment.validated_date_var('min_event_date', allow_empty=false) -%}
    {%- set ingestion_clock = profile_enrichment.validated_date_var('ingestion_clock') -%}
    {%- set currency_code = profile_enrichment.validated_code_var('currency_code', '^[A-Z]{3}$') -%}
    {%- set max_event_bytes = profile_enrichment.validated_int_var('max_event_bytes', 1024, 1073741824) -%}

    with

    events as (
        {{ profile_enrichment.file_rows('stg_aep__experience_events', source_file) }}
    ),

    identities as (
        {{ profile_enrichment.file_rows('stg_aep__event_identities', source_file) }}
    ),

    product_lines as (
        {{ profile_enrichment.file_rows('stg_aep__product_list_items', source_file) }}
    ),

    namespaces as (
        select * from {{ ref('identity_namespaces') }}
    ),

    event_types as (
        select * from {{ ref('event_types') }}
    ),

    identity_summary as (
        select
            identities.record_id,
            count(*) as identity_count,
            sum(case
                when namespaces.namespace is not null and identities.identity_value is not null
                    then 1
                else 0
            end) as usable_identity_count,
            sum(case when identities.is_primary then 1 else 0 end) as primary_identity_count
        from identities
        left join namespaces
            on identities.namespace = namespaces.namespace
        group by 1
    ),

    line_summary as (
        select
            record_id,
            max(case when line_total < 0 then 1 else 0 end) = 1 as has_negative_line_total,
            max(case when quantity <= 0 then 1 else 0 end) = 1 as has_non_positive_quantity,
            max(case
                when quantity_json_type not in ('number', 'null') then 1
                when line_total_json_type not in ('number', 'null') then 1
                else 0
            end) = 1 as has_invalid_line_type
        from product_lines
        group by 1
    ),

    checked as (
        select
            events.record_id,
            events.source_file,
            events.source_row,
            events.event_id,
            events.event_type,
            events.event_at,
            events.event_date,
            events.raw_excerpt,
            case when not events.is_valid_json then 'invalid_json' end as check_invalid_json,
            case
                when
                    events.is_valid_json
                    and (coalesce(events.event_id_json_type, '') <> 'string' or trim(events.event_id) = '')
                    then 'missing_event_id'
            end as check_missing_event_id,
            case
                when
                    events.is_valid_json
                    and (
                        events.event_type_json_type not in ('string', 'null')
                        or events.order_total_json_type not in ('number', 'null')
                        or events.product_list_items_json_type not in ('array', 'null')
                        or coalesce(line_summary.has_invalid_line_type, false)
                    )
                    then 'invalid_field_type'
            end as check_invalid_field_type,
            case
                when events.is_valid_json and coalesce(trim(events.timestamp_text), '') = ''
                    then 'missing_timestamp'
            end as check_missing_timestamp,
            case
                when events.is_valid_json and trim(events.timestamp_text) <> '' and events.event_at is null
                    then 'unparseable_timestamp'
            end as check_unparseable_timestamp,
            case
                when events.event_at < cast('{{ min_event_date }}' as timestamp)
                    then 'timestamp_before_min_date'
            end as check_timestamp_before_min_date,
            case
                {%- if ingestion_clock %}
                when events.event_at > cast('{{ ingestion_clock }}' as timestamp)
                {%- else %}
                when events.event_at > cast({{ dbt.current_timestamp() }} as timestamp)
                {%- endif %}
                    then 'future_timestamp'
            end as check_future_timestamp,
            case
                when
                    events.is_valid_json and events.event_type_json_type = 'string'
                    and trim(events.event_type) = ''
                    then 'missing_event_type'
                when events.is_valid_json and coalesce(events.event_type_json_type, 'null') = 'null'
                    then 'missing_event_type'
            end as check_missing_event_type,
            case
                when
                    events.event_type_json_type = 'string' and trim(events.event_type) <> ''
                    and event_types.event_type is null
                    then 'unknown_event_type'
            end as check_unknown_event_type,
            case
                when events.is_valid_json and coalesce(events.identity_map_json_type, '') <> 'object'
                    then 'missing_identity_map'
            end as check_missing_identity_map,
            case
                when
                    events.identity_map_json_type = 'object'
                    and coalesce(identity_summary.usable_identity_count, 0) = 0
                    then 'no_usable_identity'
            end as check_no_usable_identity,
            case
                when identity_summary.primary_identity_count > 1 then 'multiple_primary_identities'
            end as check_multiple_primary_identities,
            case
                when events.order_total < 0 or coalesce(line_summary.has_negative_line_total, false)
                    then 'negative_amount'
            end as check_negative_amount,
            case
                when coalesce(line_summary.has_non_positive_quantity, false) then 'non_positive_quantity'
            end as check_non_positive_quantity,
            case
                when
                    events.event_type = 'commerce.purchases'
                    and events.currency_code is not null and events.currency_code <> '{{ currency_code }}'
                    then 'unsupported_currency'
            end as check_unsupported_currency,
            case
                when events.record_bytes > {{ max_event_bytes }} then 'record_too_large'
            end as check_record_too_large
        from events
        left join identity_summary
            on events.record_id = identity_summary.record_id
        left join line_summary
            on events.record_id = line_summary.record_id
        left join event_types
            on events.event_type = event_types.event_type
    ),

    with_reasons as (
        select
            *,
            concat_ws(
                ',',
                check_invalid_json,
                check_missing_event_id,
                check_invalid_field_type,
                check_missing_timestamp,
                check_unparseable_timestamp,
                check_timestamp_before_min_date,
                check_future_timestamp,
                check_missing_event_type,
                check_unknown_event_type,
                check_missing_identity_map,
                check_no_usable_identity,
                check_multiple_primary_identities,
                check_negative_amount,
                check_non_positive_quantity,
                check_unsupported_currency,
                check_record_too_large
            ) as reasons_before_dedup
        from checked
    )

    select * from with_reasons
{%- endmacro %}


{#-
    The select list of int_events_validated from `checked` rows (events_checked), given each
    record's copy number among the clean records of its event_id (1 = first copy).
-#}
{% macro validated_columns(copy_number) -%}
        record_id,
        source_file,
        source_row,
        event_id,
        event_type,
        event_at,
        event_date,
        raw_excerpt,
        case
            when reasons_before_dedup <> '' then reasons_before_dedup
            when {{ copy_number }} > 1 then 'duplicate_event_id'
            else ''
        end as reason_codes,
        case
            when reasons_before_dedup <> '' then {{ dbt.split_part('reasons_before_dedup', "','", 1) }}
            when {{ copy_number }} > 1 then 'duplicate_event_id'
        end as reason_code,
        reasons_before_dedup = '' and {{ copy_number }} = 1 as is_accepted
{%- endmacro %}
