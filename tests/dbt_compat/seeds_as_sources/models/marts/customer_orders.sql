select
    c.customer_id,
    c.first_name,
    count(o.order_id) as orders,
    sum(case when o.status = 'completed' then 1 else 0 end) as completed
from {{ ref('stg_customers') }} as c
left join {{ ref('stg_orders') }} as o on o.customer_id = c.customer_id
group by c.customer_id, c.first_name
