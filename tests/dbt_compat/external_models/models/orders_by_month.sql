{{ config(materialized='external', location='exports/by_month', options={'partition_by': 'month'}) }}
select order_id, amount, date_trunc('month', ordered_at) as month_start, extract(month from ordered_at) as month from {{ ref('orders_parquet') }}
