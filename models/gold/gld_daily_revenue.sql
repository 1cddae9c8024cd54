-- Revenue and order count per day, completed orders only.
select
    order_date,
    count(*) as orders,
    round(sum(amount), 2) as revenue
from {{ ref('int_orders_enriched') }}
where status = 'completed'
group by order_date
