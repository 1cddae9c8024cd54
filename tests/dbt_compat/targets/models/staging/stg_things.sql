select id, kind from {{ ref('raw_things') }}
