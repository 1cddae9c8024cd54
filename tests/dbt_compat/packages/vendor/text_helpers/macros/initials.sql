{% macro initials(first, last) -%}
concat(left({{ first }}, 1), left({{ last }}, 1))
{%- endmacro %}
