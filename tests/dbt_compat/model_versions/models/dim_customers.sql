select id as customer_id, name as full_name, country from {{ ref('raw_customers') }}
