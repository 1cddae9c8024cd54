with refunds as (
    select customer_id, sum(amount) as refunded from {{ source('landing', 'refunds') }} group by 1
)
select c.customer_id, c.name, sum(p.amount) as total, max(r.refunded) as refunded
from {{ ref('stg_customers') }} c
join {{ ref('stg_payments') }} p on p.customer_id = c.customer_id
left join refunds r on r.customer_id = c.customer_id
group by 1, 2
