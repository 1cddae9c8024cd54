{{ intro_utils.union_all([ref('stg_orders'), ref('legacy_orders')]) }}
