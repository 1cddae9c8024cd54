-- Typed orders, one row per order_id (its latest update), without test orders or orders without a customer.
with typed as (
    select
        cast(order_id as bigint) as order_id,
        cast(customer_id as bigint) as customer_id,
        cast(order_ts as timestamp) as ordered_at,
        lower(status) as status,
        {{ money('amount') }} as amount,
        upper(currency) as currency,
        cast(updated_at as timestamp) as updated_at
    from {{ ref('brz_orders') }}
    where customer_id is not null
      and {{ is_real_order('amount') }}
),

latest as (
    {{ dedupe('typed', 'order_id', 'updated_at') }}
)

select order_id, customer_id, ordered_at, status, amount, currency, updated_at
from latest
