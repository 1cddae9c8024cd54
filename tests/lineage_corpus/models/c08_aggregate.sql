select c.country, sum(o.amount) as revenue, count(*) as orders, count(distinct o.customer_id) as buyers
from {{ source('raw', 'orders') }} o join {{ source('raw', 'customers') }} c on o.customer_id = c.customer_id
group by c.country
