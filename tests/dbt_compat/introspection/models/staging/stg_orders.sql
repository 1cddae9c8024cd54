select {{ intro_utils.star(ref('raw_orders'), except=['NOTE']) }}
from {{ ref('raw_orders') }}
