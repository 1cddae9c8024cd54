select order_id, amount from {{ source('raw', 'orders') }} order by amount desc limit 3
