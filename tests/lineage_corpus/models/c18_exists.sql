select o.order_id from {{ source('raw', 'orders') }} o
where exists (select 1 from {{ source('raw', 'events') }} e where e.customer_id = o.customer_id)
