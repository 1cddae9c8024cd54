select o.order_id,
  (select count(*) from {{ source('raw', 'events') }} e where e.customer_id = o.customer_id) as events
from {{ source('raw', 'orders') }} o
