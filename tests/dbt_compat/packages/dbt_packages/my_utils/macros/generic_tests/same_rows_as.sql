{#- Rows of the model missing from `compare_model`, over the model's own columns, which it asks the warehouse for:
    rendered for real only when the test runs. -#}
{% test same_rows_as(model, compare_model) %}
{%- set names = adapter.get_columns_in_relation(model) | map(attribute='name') | join(', ') -%}
select {{ names }} from {{ model }}
except
select {{ names }} from {{ compare_model }}
{% endtest %}
