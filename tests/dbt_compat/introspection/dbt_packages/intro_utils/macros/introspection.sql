{#- The columns of a relation, minus `except`, as a select list. Before the relation exists (dbt's parse), `*`. -#}
{% macro star(from, except=[]) -%}
    {{ return(adapter.dispatch('star', 'intro_utils')(from, except)) }}
{%- endmacro %}

{% macro default__star(from, except=[]) -%}
    {%- if from.metadata.type is not defined or not from.metadata.type.endswith('Relation') -%}
        {{ exceptions.raise_compiler_error("star() expects a relation, got " ~ from) }}
    {%- endif -%}
    {%- if not execute -%}{{ return('*') }}{%- endif -%}
    {%- set excluded = except | map('lower') | list -%}
    {%- set kept = [] -%}
    {%- for column in adapter.get_columns_in_relation(from) -%}
        {%- if column.name | lower not in excluded -%}{%- do kept.append(column.name) -%}{%- endif -%}
    {%- endfor -%}
    {{ return(kept | join(', ')) }}
{%- endmacro %}

{#- The distinct values of a column, in order, read with a statement block. -#}
{% macro column_values(table, column) -%}
    {%- if not execute -%}{{ return([]) }}{%- endif -%}
    {%- call statement('column_values', fetch_result=True) -%}
        select distinct {{ column }} as value from {{ table }} order by 1
    {%- endcall -%}
    {%- set result = load_result('column_values') -%}
    {{ return(result['data'] | map(attribute=0) | list) }}
{%- endmacro %}
