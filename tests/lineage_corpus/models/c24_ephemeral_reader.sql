select order_id, cents from {{ ref('c25_ephemeral') }} where cents > 0
