{#- A key made of several columns: each cast to text (null as a marker), joined with '-', hashed. -#}
{%- macro surrogate_key(field_list) -%}
    {{ return(adapter.dispatch('surrogate_key', 'my_utils')(field_list)) }}
{%- endmacro -%}

{%- macro default__surrogate_key(field_list) -%}
    {%- set parts = [] -%}
    {%- for field in field_list -%}
        {%- do parts.append("coalesce(cast(" ~ field ~ " as " ~ dbt.type_string() ~ "), '" ~ null_marker() ~ "')") -%}
        {%- if not loop.last -%}{%- do parts.append("'-'") -%}{%- endif -%}
    {%- endfor -%}
    {{ dbt.hash(dbt.concat(parts)) }}
{%- endmacro -%}

{%- macro null_marker() -%}{{ return('_null_') }}{%- endmacro -%}

{%- macro label(column) -%}
    {{ return(adapter.dispatch('label', 'my_utils')(column)) }}
{%- endmacro -%}

{%- macro default__label(column) -%}upper({{ column }}){%- endmacro -%}

{#- The columns of a list that are not excluded, lower-cased, as a list. -#}
{%- macro kept_columns(columns, except=[]) -%}
    {%- set excluded = except | map('lower') | list -%}
    {%- set kept = [] -%}
    {%- for column in columns if column | lower not in excluded -%}
        {%- do kept.append(column | lower) -%}
    {%- endfor -%}
    {{ return(kept) }}
{%- endmacro -%}
