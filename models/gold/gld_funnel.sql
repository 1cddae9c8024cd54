-- Daily conversion funnel: customers who viewed, added to cart, and checked out.
select
    cast(event_at as date) as event_date,
    count(distinct case when event_type = 'page_view' then customer_id end) as viewers,
    count(distinct case when event_type = 'add_to_cart' then customer_id end) as carters,
    count(distinct case when event_type = 'checkout' then customer_id end) as buyers
from {{ ref('slv_events') }}
where customer_id is not null
group by cast(event_at as date)
