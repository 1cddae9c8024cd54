select customer_id, c.name, o.amount
from {{ source('raw', 'orders') }} o join {{ source('raw', 'customers') }} c using (customer_id)
