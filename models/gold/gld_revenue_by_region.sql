-- Revenue per region and country, completed orders only.
select
    region,
    country_code,
    count(*) as orders,
    round(sum(amount), 2) as revenue
from {{ ref('int_orders_enriched') }}
where status = 'completed'
group by region, country_code
