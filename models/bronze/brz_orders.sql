-- Raw orders, exactly as they arrived: one row per line of every order file.
select * from {{ source('raw', 'orders') }}
