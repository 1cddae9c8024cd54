select customer_id, sum(amount) as spend
from {{ source('raw', 'orders') }} group by customer_id having sum(amount) > 100 and count(*) > 1
