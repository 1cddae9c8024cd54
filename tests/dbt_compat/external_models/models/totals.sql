select customer, sum(amount) as total from {{ ref('orders_csv') }} group by 1
