select count(*) as domestic from {{ ref('dim_customers', version=3) }} where is_domestic
