-- One row per customer: the latest version of each CRM record.
with typed as (
    select
        cast(customer_id as bigint) as customer_id,
        name as customer_name,
        lower(email) as email,
        upper(country_code) as country_code,
        cast(signup_date as date) as signup_date,
        cast(updated_at as timestamp) as updated_at
    from {{ ref('brz_customers') }}
)

select customer_id, customer_name, email, country_code, signup_date, updated_at
from ({{ dedupe('typed', 'customer_id', 'updated_at') }}) latest
