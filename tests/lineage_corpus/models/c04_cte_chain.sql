with paid as (select order_id, amount from {{ source('raw', 'orders') }} where status = 'paid'),
doubled as (select order_id, amount * 2 as amount2 from paid)
select order_id, amount2 from doubled
