{#- The project's own implementation of `my_utils.label`, found first through `dispatch:`. -#}
{% macro default__label(column) -%}
lower({{ column }})
{%- endmacro %}
