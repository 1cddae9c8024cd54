select distinct country from {{ source('raw', 'customers') }}
