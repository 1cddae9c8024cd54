select c.customer_id, c.name, sum(p.amount) as total
from {{ ref('stg_customers') }} c
join {{ ref('stg_payments') }} p on p.customer_id = c.customer_id
group by 1, 2
