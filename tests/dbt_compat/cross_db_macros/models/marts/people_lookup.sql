-- DuckDB finds `CustomerID` however it is written.
select customerid, FirstName as first_name from {{ ref('crm_people') }} where CUSTOMERID = 1
