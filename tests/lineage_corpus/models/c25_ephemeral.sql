{{ config(materialized='ephemeral') }}
select order_id, {{ cents('amount') }} as cents from {{ source('raw', 'orders') }}
