select order_id, amount / (select max(amount) from {{ source('raw', 'orders') }}) as share
from {{ source('raw', 'orders') }}
