{#- The quarantine: every record that could not be used, with the reason. Nothing is dropped silently. -#}

with

validated as (
    select * from {{ ref('int_events_validated') }}
),

final as (
    select
        record_id,
        source_file,
        source_row,
        event_id,
        event_type,
        event_at,
        reason_code,
        reason_codes,
        raw_excerpt
    from validated
    where not is_accepted
)

select * from final
