{%- set wanted = my_utils.kept_columns(['ID', 'First_Name', 'score', 'last_name'], except=['LAST_NAME']) -%}
select
    {{ my_utils.surrogate_key(['id', 'last_name']) }} as person_key,
    {{ my_utils.label('first_name') }} as label,
    {{ text_helpers.initials('first_name', 'last_name') }} as initials,
    {% for column in wanted %}{{ column }}{% if not loop.last %}, {% endif %}{% endfor %}
from {{ ref('raw_people') }}
