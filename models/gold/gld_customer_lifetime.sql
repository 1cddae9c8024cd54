-- One row per customer: first and last order, order count and lifetime spend.
with orders as (
    select
        customer_id,
        min(ordered_at) as first_order_at,
        max(ordered_at) as last_order_at,
        count(*) as orders,
        round(sum(case when status = 'completed' then amount else 0 end), 2) as lifetime_spend
    from {{ ref('slv_orders') }}
    group by customer_id
)

select
    c.customer_id,
    c.customer_name,
    c.country_code,
    coalesce(o.orders, 0) as orders,
    coalesce(o.lifetime_spend, 0) as lifetime_spend,
    o.first_order_at,
    o.last_order_at
from {{ ref('slv_customers') }} c
left join orders o on c.customer_id = o.customer_id
