{#-
    One row per identityMap item of each record: the XDM identityMap is an object of namespace
    -> array of {id, authenticatedState, primary}. Used for events and for profile records, so
    both read identities the same way. `relation` must have `key_column` and `json_column`.
    Columns: <key_column>, namespace, item_number (1-based), identity_value (trimmed, null when
    empty), authenticated_state (default ambiguous), is_primary.
-#}
{% macro identity_map_items(relation, key_column, json_column) -%}
    select
        items.{{ key_column }},
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
            namespaces.namespace,
            cast(entries.key as integer) + 1 as item_number,
            entries.value as item_json
        from (
            select
                records.{{ key_column }},
                map_entries.key as namespace,
                map_entries.value as items_json
            from {{ relation }} as records,
                {{ profile_enrichment.xdm_each('records.' ~ json_column, 'identityMap') }} as map_entries
            where {{ profile_enrichment.xdm_type('records.' ~ json_column, 'identityMap') }} = 'object'
        ) as namespaces,
            {{ profile_enrichment.xdm_each('namespaces.items_json', '') }} as entries
        where {{ profile_enrichment.xdm_type('namespaces.items_json', '') }} = 'array'
    ) as items
{%- endmacro %}
