select order_id as id, 'order' as what from {{ source('raw', 'orders') }}
union all
select event_id, kind from {{ source('raw', 'events') }}
