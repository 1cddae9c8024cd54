{{ config(alias='all_things') }}
select id, kind, '{{ target.name }}' as target_name, '{{ target.schema }}' as target_schema, '{{ target.type }}' as target_type
from {{ ref('stg_things') }}
