select code, name, {{ shout('name') }} as quiet from {{ ref('text_helpers', 'stg_country_codes') }}
