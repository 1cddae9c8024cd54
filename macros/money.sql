{#- Casts a raw amount to a 2-decimal money value. -#}
{% macro money(column) -%}
round(cast({{ column }} as double), 2)
{%- endmacro %}

{#- True when an amount is a real order, not a test order. -#}
{% macro is_real_order(column) -%}
{{ money(column) }} >= {{ var('min_order_amount', 0) }}
{%- endmacro %}
