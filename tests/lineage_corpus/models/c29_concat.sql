select name || '-' || country as tag from {{ source('raw', 'customers') }}
