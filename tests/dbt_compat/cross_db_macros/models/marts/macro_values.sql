select
    {{ dbt.date_trunc('month', 'cast(started as timestamp)') }} as month_start,
    {{ dbt.dateadd('day', 2, 'cast(started as timestamp)') }} as plus_two_days,
    {{ dateadd('month', 1, 'cast(started as timestamp)') }} as plus_a_month,
    {{ dbt.datediff('cast(started as timestamp)', 'cast(ended as timestamp)', 'day') }} as days,
    {{ dbt.datediff('cast(started as timestamp)', 'cast(ended as timestamp)', 'month') }} as months,
    {{ dbt.datediff('cast(started as timestamp)', 'cast(ended as timestamp)', 'hour') }} as hours,
    {{ dbt.last_day('cast(started as date)', 'month') }} as last_of_month,
    {{ dbt.concat(['name', "'!'"]) }} as shouted,
    {{ dbt.split_part("'a-b-c'", "'-'", 2) }} as second_part,
    {{ dbt.position("'b'", "'abc'") }} as b_at,
    {{ dbt.right('name', 5) }} as name_tail,
    {{ dbt.safe_cast("'x'", dbt.type_int()) }} as not_a_number,
    {{ dbt.safe_cast("'42'", api.Column.translate_type('integer')) }} as translated,
    {{ dbt.get_powers_of_two(5) }} as bits_for_five,
    {{ dbt.hash("'a'") }} as hashed,
    {{ dbt.cast_bool_to_text('flag') }} as flag_text,
    {{ dbt.string_literal("it's") }} as quoted,
    '{{ config.get("materialized") }}' as materialized,
    -- A dbt-duckdb project is planned with DuckDB's semantics: integer division gives a double, decimal literals add
    -- exactly, a timestamp cast to text has no `T`.
    7 / 2 as half,
    0.06 + 0.01 = 0.07 as exact,
    cast(cast(started as timestamp) as varchar) as started_text
from {{ ref('raw_dates') }}
