select month, count(*) as orders, sum(amount) as amount from {{ ref('orders_by_month') }} group by 1
