{%- set statuses = intro_utils.column_values(ref('stg_orders'), 'status') -%}
select
{%- for status in statuses %}
    sum(case when status = '{{ status }}' then amount else 0 end) as {{ status }}_amount{{ ',' if not loop.last }}
{%- endfor %}
from {{ ref('stg_orders') }}
