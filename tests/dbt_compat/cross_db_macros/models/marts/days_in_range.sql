{% do exceptions.warn('days_in_range is a spine') %}
-- Every day from the start up to, not including, the end; numbered with dbt's generate_series.
with days as (
    {{ dbt.date_spine('day', "cast('2024-02-27' as date)", "cast('2024-03-02' as date)") }}
),
numbers as (
    {{ dbt.generate_series(4) }}
)
select cast(d.date_day as date) as date_day, n.generated_number
from (select date_day, row_number() over (order by date_day) as position from days) d
join numbers n on n.generated_number = d.position
