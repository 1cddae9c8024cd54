select * from {{ ref('people') }} where score >= 70
