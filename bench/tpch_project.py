#!/usr/bin/env python3
"""A TPC-H medallion project for the benchmarks: TPC-H's eight tables generated at scale factor SF by
`tpchgen-cli` (the DataFusion community's generator; `pip install tpchgen-cli`) as Parquet files, bronze tables
over them, silver models that type, join the dimensions and deduplicate lineitem (pipe's keep-first), and gold
models written from TPC-H's query definitions (Q1, Q3, Q5, Q6, Q9, Q10, Q12, Q14, Q18). Amounts are DECIMAL(15,2),
so sums do not depend on the order rows are added in.

    bench/tpch_project.py --out DIR --sf 1
"""
import argparse
import os
import shutil
import subprocess
import sys

TABLES = ["nation", "region", "customer", "supplier", "part", "partsupp", "orders", "lineitem"]

SILVER = {
    "slv_lineitem": """
select l_orderkey, l_partkey, l_suppkey, l_linenumber, l_quantity, l_extendedprice, l_discount, l_tax,
       l_returnflag, l_linestatus, l_shipdate, l_commitdate, l_receiptdate, l_shipinstruct, l_shipmode
from (
    select *, row_number() over (partition by l_orderkey, l_linenumber order by l_receiptdate desc) as rn
    from {{ ref('brz_lineitem') }}
)
where rn = 1
""",
    "slv_orders": """
select o_orderkey, o_custkey, o_orderstatus, o_totalprice, o_orderdate, o_orderpriority, o_shippriority
from {{ ref('brz_orders') }}
where o_orderkey is not null
""",
    "slv_customer": """
select c.c_custkey, c.c_name, c.c_address, c.c_phone, c.c_acctbal, c.c_mktsegment, c.c_comment,
       c.c_nationkey, n.n_name, r.r_name
from {{ ref('brz_customer') }} c
join {{ ref('brz_nation') }} n on c.c_nationkey = n.n_nationkey
join {{ ref('brz_region') }} r on n.n_regionkey = r.r_regionkey
""",
    "slv_supplier": """
select s.s_suppkey, s.s_name, s.s_acctbal, s.s_nationkey, n.n_name, r.r_name
from {{ ref('brz_supplier') }} s
join {{ ref('brz_nation') }} n on s.s_nationkey = n.n_nationkey
join {{ ref('brz_region') }} r on n.n_regionkey = r.r_regionkey
""",
    "slv_part": """
select p_partkey, p_name, p_mfgr, p_brand, p_type, p_size, p_container, p_retailprice
from {{ ref('brz_part') }}
""",
    "slv_partsupp": """
select ps_partkey, ps_suppkey, ps_availqty, ps_supplycost
from {{ ref('brz_partsupp') }}
""",
}

GOLD = {
    # Q1: pricing summary report.
    "gld_q1_pricing_summary": """
select l_returnflag, l_linestatus,
       sum(l_quantity) as sum_qty,
       sum(l_extendedprice) as sum_base_price,
       sum(l_extendedprice * (1 - l_discount)) as sum_disc_price,
       sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) as sum_charge,
       avg(l_quantity) as avg_qty,
       avg(l_extendedprice) as avg_price,
       avg(l_discount) as avg_disc,
       count(*) as count_order
from {{ ref('slv_lineitem') }}
where l_shipdate <= date '1998-09-02'
group by l_returnflag, l_linestatus
""",
    # Q3: shipping priority (top 10 unshipped orders by revenue).
    "gld_q3_shipping_priority": """
select l.l_orderkey, sum(l.l_extendedprice * (1 - l.l_discount)) as revenue, o.o_orderdate, o.o_shippriority
from {{ ref('slv_customer') }} c
join {{ ref('slv_orders') }} o on c.c_custkey = o.o_custkey
join {{ ref('slv_lineitem') }} l on l.l_orderkey = o.o_orderkey
where c.c_mktsegment = 'BUILDING' and o.o_orderdate < date '1995-03-15' and l.l_shipdate > date '1995-03-15'
group by l.l_orderkey, o.o_orderdate, o.o_shippriority
order by revenue desc, o.o_orderdate, l.l_orderkey
limit 10
""",
    # Q5: local supplier volume (customer and supplier of one nation, in ASIA, in 1994).
    "gld_q5_local_supplier_volume": """
select c.n_name, sum(l.l_extendedprice * (1 - l.l_discount)) as revenue
from {{ ref('slv_customer') }} c
join {{ ref('slv_orders') }} o on c.c_custkey = o.o_custkey
join {{ ref('slv_lineitem') }} l on l.l_orderkey = o.o_orderkey
join {{ ref('slv_supplier') }} s on l.l_suppkey = s.s_suppkey and c.c_nationkey = s.s_nationkey
where c.r_name = 'ASIA' and o.o_orderdate >= date '1994-01-01' and o.o_orderdate < date '1995-01-01'
group by c.n_name
""",
    # Q6: forecasting revenue change.
    "gld_q6_forecast_revenue": """
select sum(l_extendedprice * l_discount) as revenue
from {{ ref('slv_lineitem') }}
where l_shipdate >= date '1994-01-01' and l_shipdate < date '1995-01-01'
  and l_discount between 0.05 and 0.07 and l_quantity < 24
""",
    # Q9: product type profit (parts named like green, by supplier nation and year).
    "gld_q9_product_type_profit": """
select s.n_name as nation, extract(year from o.o_orderdate) as o_year,
       sum(l.l_extendedprice * (1 - l.l_discount) - ps.ps_supplycost * l.l_quantity) as sum_profit
from {{ ref('slv_lineitem') }} l
join {{ ref('slv_part') }} p on p.p_partkey = l.l_partkey
join {{ ref('slv_supplier') }} s on s.s_suppkey = l.l_suppkey
join {{ ref('slv_partsupp') }} ps on ps.ps_suppkey = l.l_suppkey and ps.ps_partkey = l.l_partkey
join {{ ref('slv_orders') }} o on o.o_orderkey = l.l_orderkey
where p.p_name like '%green%'
group by s.n_name, extract(year from o.o_orderdate)
""",
    # Q10: returned item reporting (top 20 customers by lost revenue).
    "gld_q10_returned_items": """
select c.c_custkey, c.c_name, sum(l.l_extendedprice * (1 - l.l_discount)) as revenue, c.c_acctbal, c.n_name,
       c.c_address, c.c_phone
from {{ ref('slv_customer') }} c
join {{ ref('slv_orders') }} o on c.c_custkey = o.o_custkey
join {{ ref('slv_lineitem') }} l on l.l_orderkey = o.o_orderkey
where o.o_orderdate >= date '1993-10-01' and o.o_orderdate < date '1994-01-01' and l.l_returnflag = 'R'
group by c.c_custkey, c.c_name, c.c_acctbal, c.c_phone, c.n_name, c.c_address
order by revenue desc, c.c_custkey
limit 20
""",
    # Q12: shipping modes and order priority.
    "gld_q12_shipping_modes": """
select l.l_shipmode,
       sum(case when o.o_orderpriority in ('1-URGENT', '2-HIGH') then 1 else 0 end) as high_line_count,
       sum(case when o.o_orderpriority not in ('1-URGENT', '2-HIGH') then 1 else 0 end) as low_line_count
from {{ ref('slv_orders') }} o
join {{ ref('slv_lineitem') }} l on o.o_orderkey = l.l_orderkey
where l.l_shipmode in ('MAIL', 'SHIP') and l.l_commitdate < l.l_receiptdate and l.l_shipdate < l.l_commitdate
  and l.l_receiptdate >= date '1994-01-01' and l.l_receiptdate < date '1995-01-01'
group by l.l_shipmode
""",
    # Q14: promotion effect (share of promotional revenue in September 1995).
    "gld_q14_promotion_effect": """
select sum(case when p.p_type like 'PROMO%' then l.l_extendedprice * (1 - l.l_discount) else 0 end)
         as promo_revenue,
       sum(l.l_extendedprice * (1 - l.l_discount)) as revenue
from {{ ref('slv_lineitem') }} l
join {{ ref('slv_part') }} p on l.l_partkey = p.p_partkey
where l.l_shipdate >= date '1995-09-01' and l.l_shipdate < date '1995-10-01'
""",
    # Q18: large volume customers (orders of more than 300 units).
    "gld_q18_large_volume_customers": """
select c.c_name, c.c_custkey, o.o_orderkey, o.o_orderdate, o.o_totalprice, sum(l.l_quantity) as quantity
from {{ ref('slv_customer') }} c
join {{ ref('slv_orders') }} o on c.c_custkey = o.o_custkey
join {{ ref('slv_lineitem') }} l on o.o_orderkey = l.l_orderkey
where o.o_orderkey in (
    select l_orderkey from {{ ref('slv_lineitem') }} group by l_orderkey having sum(l_quantity) > 300
)
group by c.c_name, c.c_custkey, o.o_orderkey, o.o_orderdate, o.o_totalprice
order by o.o_totalprice desc, o.o_orderdate, o.o_orderkey
limit 100
""",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sf", default="1")
    args = parser.parse_args()
    generator = shutil.which("tpchgen-cli")
    if generator is None:
        sys.exit("tpchgen-cli is missing: pip install tpchgen-cli")
    data = os.path.join(args.out, "data")
    os.makedirs(data, exist_ok=True)
    subprocess.run([generator, "parquet", "-s", str(args.sf), "--output-dir", data], check=True,
                   stdout=subprocess.DEVNULL)
    for layer in ["bronze", "silver", "gold"]:
        os.makedirs(os.path.join(args.out, "models", layer), exist_ok=True)
    with open(os.path.join(args.out, "pipe.yml"), "w") as f:
        f.write("name: tpch\nsql_dialect: duckdb\nmodels:\n  tpch:\n    +materialized: table\n")
    sources = ["sources:", "  - name: tpch", "    tables:"]
    for table in TABLES:
        sources += [f"      - name: {table}", "        format: parquet", f"        path: data/{table}.parquet"]
        with open(os.path.join(args.out, "models", "bronze", f"brz_{table}.sql"), "w") as f:
            f.write(f"select * from {{{{ source('tpch', '{table}') }}}}\n")
    with open(os.path.join(args.out, "models", "sources.yml"), "w") as f:
        f.write("\n".join(sources) + "\n")
    for layer, models in [("silver", SILVER), ("gold", GOLD)]:
        for name, sql in models.items():
            with open(os.path.join(args.out, "models", layer, f"{name}.sql"), "w") as f:
                f.write(sql.lstrip())


if __name__ == "__main__":
    main()
