select cast(amount as int) as whole, order_id::varchar as id_text from {{ source('raw', 'orders') }}
