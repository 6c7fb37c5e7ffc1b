{#-
    Vars that reach SQL are validated here, so a typo or an injection attempt fails the run
    with one clear line instead of producing wrong SQL.
-#}

{% macro validated_date_var(name, allow_empty=true) -%}
    {%- set raw = profile_enrichment.setting(name) if name in ('as_of_date', 'ingestion_clock') else var(name) -%}
    {%- set value = (raw | string) | trim -%}
    {%- if value == '' or value | lower == 'none' -%}
        {%- if allow_empty -%}{{ return('') }}{%- endif -%}
        {{ exceptions.raise_compiler_error("var '" ~ name ~ "' is required: give a date as YYYY-MM-DD") }}
    {%- endif -%}
    {%- if not modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', value) -%}
        {{ exceptions.raise_compiler_error("var '" ~ name ~ "' must be a date as YYYY-MM-DD, got: " ~ (value | truncate(40))) }}
    {%- endif -%}
    {%- set parts = value.split('-') -%}
    {%- set year, month, day = parts[0] | int, parts[1] | int, parts[2] | int -%}
    {%- if month < 1 or month > 12 or day < 1 or day > 31 -%}
        {{ exceptions.raise_compiler_error("var '" ~ name ~ "' is not a real date: " ~ value) }}
    {%- endif -%}
    {%- set days_in_month = [31, 29 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 28,
                             31, 30, 31, 30, 31, 31, 30, 31, 30, 31] -%}
    {%- if day > days_in_month[month - 1] -%}
        {{ exceptions.raise_compiler_error("var '" ~ name ~ "' is not a real date: " ~ value) }}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}


{% macro validated_int_var(name, min_value=0, max_value=100000) -%}
    {%- set raw = var(name) -%}
    {%- if raw is number and raw == (raw | int) -%}
        {%- set value = raw | int -%}
    {%- elif raw is string and modules.re.match('^[0-9]+$', raw | trim) -%}
        {%- set value = raw | trim | int -%}
    {%- else -%}
        {{ exceptions.raise_compiler_error("var '" ~ name ~ "' must be a whole number, got: " ~ (raw | string | truncate(40))) }}
    {%- endif -%}
    {%- if value < min_value or value > max_value -%}
        {{ exceptions.raise_compiler_error("var '" ~ name ~ "' must be between " ~ min_value ~ " and " ~ max_value ~ ", got: " ~ value) }}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}


{% macro validated_int_list_var(name, min_value=1, max_value=3650) -%}
    {%- set raw = var(name) -%}
    {%- if raw is string -%}
        {%- set raw = raw.strip('[] ').split(',') -%}
    {%- endif -%}
    {%- set values = [] -%}
    {%- for item in raw -%}
        {%- set text = item | string | trim -%}
        {%- if not modules.re.match('^[0-9]+$', text) or (text | int) < min_value or (text | int) > max_value -%}
            {{ exceptions.raise_compiler_error("var '" ~ name ~ "' must be a list of whole numbers between " ~ min_value ~ " and " ~ max_value ~ ", got: " ~ (raw | string | truncate(60))) }}
        {%- endif -%}
        {%- do values.append(text | int) -%}
    {%- endfor -%}
    {%- if values | length == 0 -%}
        {{ exceptions.raise_compiler_error("var '" ~ name ~ "' must not be empty") }}
    {%- endif -%}
    {{ return(values | unique | sort) }}
{%- endmacro %}


{% macro validated_code_var(name, pattern='^[A-Za-z][A-Za-z0-9_]*$') -%}
    {%- set value = (profile_enrichment.setting(name) if name == 'tenant_id' else var(name)) | string | trim -%}
    {%- if not modules.re.match(pattern, value) -%}
        {{ exceptions.raise_compiler_error("var '" ~ name ~ "' must match " ~ pattern ~ ", got: " ~ (value | truncate(40))) }}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}


{% macro validated_raw_format() -%}
    {%- set value = profile_enrichment.setting('raw_format') | lower -%}
    {%- if value not in ('parquet', 'jsonl') -%}
        {{ exceptions.raise_compiler_error("var 'raw_format' must be 'parquet' or 'jsonl', got: " ~ (value | truncate(40))) }}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}


{% macro validated_path_var(name) -%}
    {#- Paths end up inside SQL string literals: refuse quotes and control characters. -#}
    {%- set value = profile_enrichment.setting(name) -%}
    {%- if value == '' or modules.re.search("['\"\\\\;\x00-\x1f]", value) -%}
        {{ exceptions.raise_compiler_error("var '" ~ name ~ "' must be a plain path without quotes, backslashes or semicolons, got: " ~ (value | truncate(60))) }}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}
