{#-
    One row per identityMap item of each record: the XDM identityMap is an object of namespace
    -> array of {id, authenticatedState, primary}. Used for events and for profile records, so
    both read identities the same way. `relation` must have `key_column` and `json_column`.
    `map_path` is where the identityMap sits in `json_column`: 'identityMap' for whole records
    (profiles), '' when the column holds the identityMap itself (staged events).
    Columns: <key_column>, any `carry_columns` of the relation, namespace, item_number
    (1-based), identity_value (trimmed, null when empty), authenticated_state (default
    ambiguous), is_primary.
-#}
{#-
    Every identity passes the privacy guard here, once for events and profiles alike: a value
    that is a raw e-mail address (in any namespace), or an Email_LC_SHA256 value that is not a
    SHA-256 hex digest (an unhashed address in the hashed namespace), is never used as an
    identity. Its identity_value is null and identity_refusal says why, so the record counts
    it as unusable (and is quarantined as no_usable_identity when nothing else identifies it).
    Raw addresses therefore never reach features, scores or exported identityMaps.
-#}
{% macro identity_map_items(relation, key_column, json_column, carry_columns=[], map_path='identityMap') -%}
    select
        parsed.{{ key_column }},
        {%- for column in carry_columns %}
        parsed.{{ column }},
        {%- endfor %}
        parsed.namespace,
        parsed.item_number,
        case
            when {{ profile_enrichment.identity_refusal('parsed.namespace', 'parsed.identity_value') }} is null
                then parsed.identity_value
        end as identity_value,
        {{ profile_enrichment.identity_refusal('parsed.namespace', 'parsed.identity_value') }}
            as identity_refusal,
        parsed.authenticated_state,
        parsed.is_primary
    from (
        {{ adapter.dispatch('identity_map_items', 'profile_enrichment')(relation, key_column, json_column, carry_columns, map_path) }}
    ) as parsed
{%- endmacro %}


{#- Why an identity value may not be used ('raw_email', 'unhashed_email'), or null. -#}
{% macro identity_refusal(namespace, value) -%}
    case
        when {{ profile_enrichment.regexp_full_match(value, '[^@[:space:]]+@[^@[:space:]]+[.][A-Za-z]{2,}') }}
            then 'raw_email'
        when {{ namespace }} = 'Email_LC_SHA256'
            and not {{ profile_enrichment.regexp_full_match('lower(' ~ value ~ ')', '[0-9a-f]{64}') }}
            then 'unhashed_email'
    end
{%- endmacro %}


{#- True when the whole of `expr` matches the (POSIX-class) regular expression `pattern`. -#}
{% macro regexp_full_match(expr, pattern) -%}
    {{ return(adapter.dispatch('regexp_full_match', 'profile_enrichment')(expr, pattern)) }}
{%- endmacro %}

{% macro duckdb__regexp_full_match(expr, pattern) -%}
    regexp_full_match({{ expr }}, '{{ pattern }}')
{%- endmacro %}

{#- Java regular expressions have no POSIX classes inside brackets: [:space:] becomes \s. -#}
{% macro spark__regexp_full_match(expr, pattern) -%}
    ({{ expr }} rlike '^({{ pattern | replace('[:space:]', '\\\\s') }})$')
{%- endmacro %}

{% macro default__regexp_full_match(expr, pattern) -%}
    ({{ expr }} ~ '^({{ pattern }})$')
{%- endmacro %}


{#-
    DuckDB: parse identityMap once into a MAP of namespace -> list of structs (json_transform),
    then unnest; 2.4x faster than two lateral json_each steps on 649k events (1.07 s vs 2.52 s).
    Fields keep their JSON text (primary is compared with 'true'), so a wrong type is not
    silently coerced; a namespace whose value is not an array yields no rows.
-#}
{% macro duckdb__identity_map_items(relation, key_column, json_column, carry_columns=[], map_path='identityMap') -%}
    select
        items.{{ key_column }},
        {%- for column in carry_columns %}
        items.{{ column }},
        {%- endfor %}
        items.namespace,
        cast(items.item_number as integer) as item_number,
        nullif(trim(items.item.id), '') as identity_value,
        coalesce(items.item.authenticatedState, 'ambiguous') as authenticated_state,
        coalesce(items.item."primary" = 'true', false) as is_primary
    from (
        select
            entries.{{ key_column }},
            {%- for column in carry_columns %}
            entries.{{ column }},
            {%- endfor %}
            entries.entry.key as namespace,
            unnest(generate_series(1, len(entries.entry.value))) as item_number,
            unnest(entries.entry.value) as item
        from (
            select
                records.{{ key_column }},
                {%- for column in carry_columns %}
                records.{{ column }},
                {%- endfor %}
                unnest(map_entries(json_transform(
                    {{ profile_enrichment.duckdb__xdm_json('records.' ~ json_column, map_path) }},
                    '"MAP(VARCHAR, STRUCT(id VARCHAR, authenticatedState VARCHAR, \"primary\" VARCHAR)[])"'
                ))) as entry
            from {{ relation }} as records
            where json_type(records.{{ json_column }}, '{{ profile_enrichment.xdm_json_path(map_path) }}') = 'OBJECT'
        ) as entries
    ) as items
{%- endmacro %}


{#- Any engine with the xdm_each / xdm_text / xdm_type implementations. -#}
{% macro default__identity_map_items(relation, key_column, json_column, carry_columns=[], map_path='identityMap') -%}
    select
        items.{{ key_column }},
        {%- for column in carry_columns %}
        items.{{ column }},
        {%- endfor %}
        items.namespace,
        items.item_number,
        nullif(trim({{ profile_enrichment.xdm_text('items.item_json', 'id') }}), '') as identity_value,
        coalesce({{ profile_enrichment.xdm_text('items.item_json', 'authenticatedState') }}, 'ambiguous')
            as authenticated_state,
        coalesce({{ profile_enrichment.xdm_text('items.item_json', 'primary') }} = 'true', false)
            as is_primary
    from (
        select
            namespaces.{{ key_column }},
            {%- for column in carry_columns %}
            namespaces.{{ column }},
            {%- endfor %}
            namespaces.namespace,
            cast(entries.key as integer) + 1 as item_number,
            entries.value as item_json
        from (
            select
                records.{{ key_column }},
                {%- for column in carry_columns %}
                records.{{ column }},
                {%- endfor %}
                map_entries.key as namespace,
                map_entries.value as items_json
            from {{ relation }} as records,
                {{ profile_enrichment.xdm_each('records.' ~ json_column, map_path) }} as map_entries
            where {{ profile_enrichment.xdm_type('records.' ~ json_column, map_path) }} = 'object'
        ) as namespaces,
            {{ profile_enrichment.xdm_each('namespaces.items_json', '') }} as entries
        where {{ profile_enrichment.xdm_type('namespaces.items_json', '') }} = 'array'
    ) as items
{%- endmacro %}
