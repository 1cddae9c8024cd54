select o.order_id, c.country from {{ source('raw', 'orders') }} o cross join {{ source('raw', 'customers') }} c
