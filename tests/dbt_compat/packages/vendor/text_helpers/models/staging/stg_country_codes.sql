select code, {{ shout('name') }} as name from {{ ref('country_codes') }}
