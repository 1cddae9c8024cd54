select order_id as id, amount from {{ source('raw', 'orders') }}
