{#-
    The identities to export for each customer as of the run's as-of date: the CRMID, the
    hashed email and the most recent ECID. They come from the customer's own key, the aliases
    stitched to it before the as-of date, and the Individual Profile records (which state
    which identities belong together).
-#}

with

customers as (
    select
        customer_id,
        as_of_date
    from {{ ref('customer_features') }}
),

links as (
    select * from {{ ref('int_identity_links') }}
),

profile_identities as (
    select * from {{ ref('stg_aep__profile_identities') }}
),

profile_people as (
    select
        profile_record_key,
        min(case when namespace = 'CRMID' then namespace || ':' || identity_value end) as person_key
    from profile_identities
    where identity_value is not null
    group by 1
),

profile_links as (
    select
        profile_identities.namespace || ':' || profile_identities.identity_value as alias_key,
        profile_people.person_key
    from profile_identities
    inner join profile_people
        on profile_identities.profile_record_key = profile_people.profile_record_key
    where
        profile_people.person_key is not null
        and profile_identities.identity_value is not null
),

known_identities as (
    select
        customers.customer_id,
        customers.customer_id as identity_key,
        customers.as_of_date as seen_date
    from customers
    union all
    select
        customers.customer_id,
        links.alias_key as identity_key,
        links.linked_date as seen_date
    from customers
    inner join links
        on
            customers.customer_id = links.person_key
            and customers.as_of_date > links.linked_date
    union all
    select
        customers.customer_id,
        profile_links.alias_key as identity_key,
        cast(null as date) as seen_date
    from customers
    inner join profile_links
        on customers.customer_id = profile_links.person_key
),

split as (
    select
        customer_id,
        {{ dbt.split_part('identity_key', "':'", 1) }} as namespace,
        {{ dbt.right('identity_key', dbt.length('identity_key') ~ ' - ' ~ dbt.position("':'", 'identity_key')) }}
            as identity_value,
        seen_date
    from known_identities
),

ranked as (
    select
        *,
        row_number() over (
            partition by customer_id, namespace
            order by seen_date desc nulls last, identity_value asc
        ) as recency_rank
    from split
),

final as (
    select
        customer_id,
        max(case when namespace = 'CRMID' and recency_rank = 1 then identity_value end) as crm_id,
        max(case when namespace = 'Email_LC_SHA256' and recency_rank = 1 then identity_value end)
            as email_sha256,
        max(case when namespace = 'ECID' and recency_rank = 1 then identity_value end) as ecid
    from ranked
    group by 1
)

select * from final
