select id as customer_id, name as full_name from {{ ref('raw_customers') }}
