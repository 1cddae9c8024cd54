{% test at_least(model, column_name, min_value) %}
  {{ return(adapter.dispatch('test_at_least', 'my_utils')(model, column_name, min_value)) }}
{% endtest %}

{% macro default__test_at_least(model, column_name, min_value) %}
select {{ column_name }}
from {{ model }}
where {{ column_name }} < {{ min_value }}
{% endmacro %}
