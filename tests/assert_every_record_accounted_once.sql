{#-
    The ingestion accounting: every record read (stg_aep__experience_events) is in exactly one
    of the clean stream (int_events_accepted) and the quarantine (rejected_events), matched by
    record_id, and neither holds a record that was never read. Returns the offending records
    with how often each was read, accepted and quarantined.
-#}

with

read_records as (
    select record_id from {{ ref('stg_aep__experience_events') }}
),

accepted as (
    select record_id from {{ ref('int_events_accepted') }}
),

rejected as (
    select record_id from {{ ref('rejected_events') }}
),

placements as (
    select
        record_id,
        1 as is_read,
        0 as is_accepted,
        0 as is_rejected
    from read_records
    union all
    select
        record_id,
        0 as is_read,
        1 as is_accepted,
        0 as is_rejected
    from accepted
    union all
    select
        record_id,
        0 as is_read,
        0 as is_accepted,
        1 as is_rejected
    from rejected
),

per_record as (
    select
        record_id,
        cast(sum(is_read) as bigint) as times_read,
        cast(sum(is_accepted) as bigint) as times_accepted,
        cast(sum(is_rejected) as bigint) as times_rejected
    from placements
    group by 1
),

final as (
    select *
    from per_record
    where times_read <> 1 or times_accepted + times_rejected <> 1
)

select * from final
