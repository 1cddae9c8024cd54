-- Raw clickstream events.
select * from {{ source('raw', 'events') }}
