select order_id from {{ source('raw', 'orders') }}
where customer_id in (select customer_id from {{ source('raw', 'customers') }} where country = 'DE')
