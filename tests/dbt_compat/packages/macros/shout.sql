{#- The project's own `shout`: the package's models still find the package's first, as in dbt. -#}
{% macro shout(column) -%}
lower({{ column }})
{%- endmacro %}
