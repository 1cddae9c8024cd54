select order_id, sum(amount) over (partition by customer_id) as customer_total
from {{ source('raw', 'orders') }}
