select id, amount * 1.2 as gross from {{ ref('c01_copy_rename') }}
