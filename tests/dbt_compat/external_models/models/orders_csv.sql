{{ config(materialized='external', format='csv', delimiter='|') }}
select order_id, customer, amount from {{ ref('orders_parquet') }}
