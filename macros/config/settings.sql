{#-
    Settings that users commonly pass from a scheduler: a --vars value wins, else the
    environment variable, else the default. One table, so the README, the CLI and dbt agree.

    | setting          | env var             | default            |
    |------------------|---------------------|--------------------|
    | raw_dir          | PE_RAW_DIR          | data/raw           |
    | raw_format       | PE_RAW_FORMAT       | parquet            |
    | as_of_date       | PE_AS_OF_DATE       | '' (newest + 1 day)|
    | ingestion_clock  | PE_INGESTION_CLOCK  | '' (now)           |
    | artifacts_dir    | PE_ARTIFACTS_DIR    | data/artifacts     |
    | tenant_id        | PE_TENANT_ID        | profileenrichment  |
-#}
{% macro setting(name) -%}
    {%- set defaults = {
        'raw_dir': ('PE_RAW_DIR', 'data/raw'),
        'raw_format': ('PE_RAW_FORMAT', 'parquet'),
        'as_of_date': ('PE_AS_OF_DATE', ''),
        'ingestion_clock': ('PE_INGESTION_CLOCK', ''),
        'artifacts_dir': ('PE_ARTIFACTS_DIR', 'data/artifacts'),
        'tenant_id': ('PE_TENANT_ID', 'profileenrichment'),
    } -%}
    {%- if name not in defaults -%}
        {{ exceptions.raise_compiler_error("unknown setting '" ~ name ~ "'") }}
    {%- endif -%}
    {%- set env_name, default = defaults[name] -%}
    {{ return(var(name, env_var(env_name, default)) | string | trim) }}
{%- endmacro %}
