select o.order_id, c.name
from {{ source('raw', 'orders') }} o
left join {{ source('raw', 'customers') }} c on o.customer_id = c.customer_id and c.country = 'DE'
