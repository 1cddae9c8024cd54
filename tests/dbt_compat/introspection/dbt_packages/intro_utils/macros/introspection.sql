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

{#- The union of relations over the superset of their columns (null where one lacks a column), with the relation
    each row came from. -#}
{% macro union_all(relations) -%}
    {%- if not execute -%}{{ return('select 1 as placeholder') }}{%- endif -%}
    {%- set columns_of = {} -%}
    {%- set superset = {} -%}
    {%- for relation in relations -%}
        {%- do columns_of.update({relation.identifier: []}) -%}
        {%- for column in adapter.get_columns_in_relation(relation) -%}
            {%- do columns_of[relation.identifier].append(column.name) -%}
            {%- if column.name not in superset or (column.is_string() and not superset[column.name].is_string()) -%}
                {%- do superset.update({column.name: column}) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endfor -%}
    {%- for relation in relations %}
    select '{{ relation.identifier }}' as source_relation
        {%- for name, column in superset.items() -%}
        , {% if name in columns_of[relation.identifier] %}{{ name }}{% else %}cast(null as {{ column.data_type }}){% endif %} as {{ name }}
        {%- endfor %}
    from {{ relation }}
    {% if not loop.last %}union all{% endif %}
    {%- endfor -%}
{%- endmacro %}
