select customer_id from {{ source('raw', 'orders') }}
union
select customer_id from {{ source('raw', 'customers') }}
