select order_id, case when status = 'paid' then amount when status = 'open' then 0 else null end as paid_amount
from {{ source('raw', 'orders') }}
