{{ config(materialized='ephemeral') }}
-- Orders with their customer's country and region; inlined into the gold models that use it.
select
    o.order_id,
    o.customer_id,
    o.ordered_at,
    cast(o.ordered_at as date) as order_date,
    o.status,
    o.amount,
    c.country_code,
    coalesce(cc.region, 'Unknown') as region
from {{ ref('slv_orders') }} o
left join {{ ref('slv_customers') }} c on o.customer_id = c.customer_id
left join {{ ref('country_codes') }} cc on c.country_code = cc.country_code
