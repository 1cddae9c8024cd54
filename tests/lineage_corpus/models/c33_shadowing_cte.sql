with orders as (select order_id, amount from {{ source('raw', 'orders') }} where amount > 0)
select order_id, amount from orders
