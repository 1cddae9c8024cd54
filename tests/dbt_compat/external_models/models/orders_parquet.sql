{{ config(materialized='external', location='exports/orders.parquet') }}
select order_id, customer, amount, cast(ordered_at as date) as ordered_at from {{ ref('raw_orders') }}
