select t.x, t.order_id from (select order_id, amount * 2 as x from {{ source('raw', 'orders') }}) as t
