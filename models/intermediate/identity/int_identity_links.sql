{#-
    Identity stitching. When an event carries a person-level identity (CRMID, say) together
    with lower-priority ones (ECID, Email_LC_SHA256), those aliases belong to that person from
    the day they were first seen together (linked_date). Features as of D only apply links
    with linked_date < D, so a visitor who logs in later is not revealed early (no leakage).
    An alias seen with several people is linked to the first one (then the smallest key).
    An alias of an alias is followed to the final person (linked from the later of the two days).
-#}

with

accepted as (
    select * from {{ ref('int_events_accepted') }}
),

identities as (
    select * from {{ ref('stg_aep__event_identities') }}
),

namespaces as (
    select * from {{ ref('identity_namespaces') }}
),

person_events as (
    select
        accepted.record_id,
        accepted.identity_key as person_key,
        accepted.event_date,
        namespaces.priority as person_priority
    from accepted
    inner join namespaces
        on accepted.identity_namespace = namespaces.namespace
    where namespaces.is_person_level
),

aliases as (
    select
        identities.namespace || ':' || identities.identity_value as alias_key,
        person_events.person_key,
        person_events.event_date
    from person_events
    inner join identities
        on person_events.record_id = identities.record_id
    inner join namespaces
        on identities.namespace = namespaces.namespace
    where
        identities.identity_value is not null
        and namespaces.priority > person_events.person_priority
),

first_links as (
    select
        alias_key,
        person_key,
        min(event_date) as linked_date
    from aliases
    group by 1, 2
),

ranked as (
    select
        *,
        row_number() over (partition by alias_key order by linked_date, person_key) as link_rank
    from first_links
),

first_hops as (
    select
        alias_key,
        person_key,
        linked_date
    from ranked
    where link_rank = 1
),

final as (
    -- An alias of an alias (ECID -> hashed email -> CRMID) belongs to the final person from
    -- the day both links exist. One extra hop covers the namespaces we rank (3 levels).
    select
        first_hops.alias_key,
        coalesce(second_hops.person_key, first_hops.person_key) as person_key,
        case
            when second_hops.person_key is null then first_hops.linked_date
            when second_hops.linked_date > first_hops.linked_date then second_hops.linked_date
            else first_hops.linked_date
        end as linked_date
    from first_hops
    left join first_hops as second_hops
        on first_hops.person_key = second_hops.alias_key
)

select * from final
