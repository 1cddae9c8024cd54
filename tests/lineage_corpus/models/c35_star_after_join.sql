select * from {{ source('raw', 'customers') }} c join {{ source('raw', 'events') }} e on c.customer_id = e.customer_id
