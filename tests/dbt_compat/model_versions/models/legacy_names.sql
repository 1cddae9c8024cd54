-- A pinned ref reads that version, whatever the latest is.
select full_name from {{ ref('dim_customers', v=1) }}
