select * exclude (status, ordered_at) from {{ source('raw', 'orders') }}
