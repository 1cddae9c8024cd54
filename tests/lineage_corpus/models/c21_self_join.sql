select a.order_id as first_id, b.order_id as later_id
from {{ source('raw', 'orders') }} a join {{ source('raw', 'orders') }} b
  on a.customer_id = b.customer_id and a.ordered_at < b.ordered_at
