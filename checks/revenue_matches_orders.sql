-- Gold revenue adds up to the completed orders of silver: a row here is a day where they disagree.
select r.order_date, r.revenue, round(sum(o.amount), 2) as from_orders
from {{ ref('gld_daily_revenue') }} r
join {{ ref('slv_orders') }} o on cast(o.ordered_at as date) = r.order_date and o.status = 'completed'
group by r.order_date, r.revenue
having abs(r.revenue - round(sum(o.amount), 2)) > 0.005
