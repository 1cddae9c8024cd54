select customer_id, amount from {{ source('landing', 'payments') }}
