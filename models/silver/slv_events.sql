-- Typed clickstream events, duplicates removed.
select distinct
    event_id,
    cast(customer_id as bigint) as customer_id,
    event_type,
    cast(event_ts as timestamp) as event_at,
    page
from {{ ref('brz_events') }}
where event_id is not null
