{#- A custom generic test: rows where the column is not strictly positive fail. -#}
{% test positive(model, column_name) %}
select * from {{ model }} where {{ column_name }} <= 0
{% endtest %}
