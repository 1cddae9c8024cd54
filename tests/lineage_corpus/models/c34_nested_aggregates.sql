select customer_id, sum(amount) / count(*) as average, max(amount) - min(amount) + 1 as spread
from {{ source('raw', 'orders') }} group by customer_id
