select order_id, {{ cents('amount') }} as amount_cents from {{ source('raw', 'orders') }}
