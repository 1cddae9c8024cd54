-- Raw customer records from the CRM export (newline-delimited JSON).
select * from {{ source('raw', 'customers') }}
