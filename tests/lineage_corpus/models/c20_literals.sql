select 1 as one, 'x' as letter, current_date as today
