{#- Keeps one row per key: the latest by `order_by`. Ties are broken by every selected column, so the
    result does not depend on file order. -#}
{% macro dedupe(relation, key, order_by) -%}
select * exclude (_pipe_rank)
from (
    select
        *,
        row_number() over (partition by {{ key }} order by {{ order_by }} desc) as _pipe_rank
    from {{ relation }}
) ranked
where _pipe_rank = 1
{%- endmacro %}
