{%- if execute -%}
    {%- set counted = run_query('select count(*) as n from ' ~ ref('stg_orders')).columns[0].values()[0] -%}
{%- else -%}
    {%- set counted = 0 -%}
{%- endif %}
select {{ counted }} as counted, count(*) as actual from {{ ref('stg_orders') }}
