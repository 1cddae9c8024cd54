select o.order_id, coalesce(c.name, o.status) as label
from {{ source('raw', 'orders') }} o left join {{ source('raw', 'customers') }} c on o.customer_id = c.customer_id
