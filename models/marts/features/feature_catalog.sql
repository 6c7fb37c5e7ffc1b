{#-
    The feature list, read from the YAML of customer_features at run time (graph metadata):
    a column is a model feature when its config.meta has `feature: true`, a segmentation input
    when it has `segmentation: true`. The Python models take their feature lists from here, so
    an analyst adds a feature with one SQL edit and one tagged YAML column.

    Identifiers, dates, booleans, strings and labels can never be features: they are refused here,
    whatever their tags say (is_feature_refused explains why).
-#}
{%- set rows = [] -%}
{%- set numeric_types = ['bigint', 'integer', 'int', 'smallint', 'double', 'float', 'real', 'decimal', 'numeric', 'hugeint'] -%}
{%- set never = ['customer_id', 'as_of_date', 'is_churned', 'is_converted', 'future_revenue',
                 'is_churn_eligible', 'is_conversion_eligible'] -%}
{%- if execute -%}
    {%- for node in graph.nodes.values()
        if node.resource_type == 'model' and node.name == 'customer_features'
           and node.package_name == project_name -%}
{%- for column in node.columns.values() -%}
{%- set meta = column.meta or {} -%}
{%- set config_meta = (column.config.meta if column.config is defined and column.config.meta is defined else {}) or {} -%}
{%- set tagged = meta.get('feature', config_meta.get('feature', false)) in (true, 'true') -%}
{%- set segmentation = meta.get('segmentation', config_meta.get('segmentation', false)) in (true, 'true') -%}
{#- one name per type on every engine: the contracts say `double precision` on PostgreSQL, `string` on Spark -#}
{%- set data_type = (column.data_type or '') | lower | replace('double precision', 'double') | replace('string', 'varchar') -%}
{%- set refusal = '' -%}
{%- if column.name in never -%}
{%- set refusal = 'identifier, date or label' -%}
{%- elif data_type.split('(')[0] not in numeric_types -%}
{%- set refusal = 'not numeric (' ~ data_type ~ ')' -%}
{%- endif -%}
            {%- do rows.append({
                'column_name': column.name,
                'data_type': data_type,
                'feature_group': meta.get('feature_group', config_meta.get('feature_group', '')) or '',
                'is_tagged_feature': tagged,
                'is_feature': tagged and refusal == '',
                'is_segmentation_feature': segmentation and refusal == '',
                'refusal_reason': refusal if (tagged or segmentation) else '',
                'description': (column.description or '') | replace("'", "''") | truncate(500),
                'ordinal': loop.index,
            }) -%}
{%- endfor -%}
{%- endfor -%}
{%- endif %}

with

catalog as (
    {%- if rows | length == 0 %}
    select
        cast(null as {{ dbt.type_string() }}) as column_name,
        cast(null as {{ dbt.type_string() }}) as data_type,
        cast(null as {{ dbt.type_string() }}) as feature_group,
        cast(null as boolean) as is_tagged_feature,
        cast(null as boolean) as is_feature,
        cast(null as boolean) as is_segmentation_feature,
        cast(null as {{ dbt.type_string() }}) as refusal_reason,
        cast(null as {{ dbt.type_string() }}) as description,
        cast(null as integer) as ordinal
    where false
    {%- else %}
    {%- for row in rows %}
    select
        cast('{{ row.column_name }}' as {{ dbt.type_string() }}) as column_name,
        cast('{{ row.data_type }}' as {{ dbt.type_string() }}) as data_type,
        cast('{{ row.feature_group }}' as {{ dbt.type_string() }}) as feature_group,
        {{ 'true' if row.is_tagged_feature else 'false' }} as is_tagged_feature,
        {{ 'true' if row.is_feature else 'false' }} as is_feature,
        {{ 'true' if row.is_segmentation_feature else 'false' }} as is_segmentation_feature,
        cast('{{ row.refusal_reason }}' as {{ dbt.type_string() }}) as refusal_reason,
        cast('{{ row.description }}' as {{ dbt.type_string() }}) as description,
        {{ row.ordinal }} as ordinal
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
    {%- endif %}
),

final as (
    select * from catalog
)

select * from final
