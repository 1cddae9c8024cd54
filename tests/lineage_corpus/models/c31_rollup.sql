select country, name, count(*) as n from {{ source('raw', 'customers') }} group by rollup (country, name)
