{#- One row saying whether the model has fewer rows than `min_rows` (an argument the test does not declare, read
    from `kwargs`); `fail_calc` makes that row's flag the failure count, so a passing model's row is no failure. -#}
{% test row_count_at_least(model) %}
{{ config(fail_calc='sum(too_few)') }}
select case when count(*) < {{ kwargs.get('min_rows', 1) }} then 1 else 0 end as too_few
from {{ model }}
{% endtest %}
