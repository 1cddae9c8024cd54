select id as customer_id, name as full_name, country, country = 'GB' as is_domestic from {{ ref('raw_customers') }}
