#!/usr/bin/env bash
# Incremental merge benchmark: a 10M-row orders table partitioned by day (100 days), then a batch of 1% of that
# (50k updates to orders of the last two days, 50k new orders of a new day) merged on `order_id`.
# Prints the full-refresh time, the incremental time and their ratio (target: incremental < 10% of full refresh).
#   bench/merge.sh [ROWS]        (default: 10000000)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${PIPE_RELEASE_TARGET:-$HOME/.cache/pipe-target-release}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/pipe"
venv=${PEER_VENV:-$HOME/.cache/pipe-peer-venv}
rows=${1:-10000000}
work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
mkdir -p "$work/data/orders" "$work/models"
cat > "$work/pipe.yml" <<'EOF'
name: merge_bench
layer-rules: off
EOF
cat > "$work/models/sources.yml" <<'EOF'
sources:
  - name: raw
    tables:
      - name: orders
        format: parquet
        path: data/orders/*.parquet
EOF
cat > "$work/models/orders.sql" <<'EOF'
{{ config(materialized='incremental', unique_key='order_id', partition_by='day',
          incremental_predicates=["target.day = source.day"]) }}
select order_id, day, customer_id, amount, status, updated_at
from {{ source('raw', 'orders') }}
{% if is_incremental() %}
where updated_at > (select max(updated_at) from {{ this }})
{% endif %}
EOF
# The base: ROWS orders over 100 days; the batch: 1% of ROWS, half updates of the last two days, half new orders.
"$venv/bin/python" - "$work" "$rows" <<'EOF'
import sys, duckdb
work, rows = sys.argv[1], int(sys.argv[2])
con = duckdb.connect()
con.execute(f"""copy (
  select cast(i as bigint) as order_id, date '2026-01-01' + cast(i * 100 // {rows} as integer) as day,
         cast(i % 100000 as bigint) as customer_id, cast((i % 997) * 1.5 as double) as amount, 'placed' as status,
         timestamp '2026-01-01' + to_seconds(i * 8640000 // {rows}) as updated_at
  from range({rows}) t(i)) to '{work}/data/orders/base.parquet' (format parquet)""")
half = rows // 200
con.execute(f"""copy (
  select order_id, day, customer_id, cast(amount + 1 as double) as amount, 'shipped' as status,
         timestamp '2026-04-11 00:00:00' + to_seconds(order_id % 3600) as updated_at
  from (select * from read_parquet('{work}/data/orders/base.parquet') order by order_id desc limit {half})
  union all
  select cast({rows} + i as bigint), date '2026-04-11', cast(i % 100000 as bigint), cast(10.0 as double), 'placed',
         timestamp '2026-04-11 00:00:00' + to_seconds(i % 3600)
  from range({half}) t(i)) to '{work}/batch.parquet' (format parquet)""")
EOF
/usr/bin/time -o "$work/time_full" -f "%e %M" "$bin" run --project-dir "$work" >/dev/null 2>"$work/full.log"
full=$(cut -d' ' -f1 "$work/time_full")
mv "$work/batch.parquet" "$work/data/orders/batch.parquet"
/usr/bin/time -o "$work/time_inc" -f "%e %M" "$bin" run --project-dir "$work" >/dev/null 2>"$work/inc.log"
inc=$(cut -d' ' -f1 "$work/time_inc")
node_time() { "$venv/bin/python" -c "import json,sys; r=json.load(open(sys.argv[1])); t=r['results'][0]['timing']; print(f\"{t['total_seconds']:.3f} plan={t['plan_seconds']:.3f} execute={t['execute_seconds']:.3f} commit={t['commit_seconds']:.3f}\")" "$1"; }
inc_node=$(node_time "$work/target/run_results.json")
grep -h "orders" "$work/full.log" "$work/inc.log" | sed 's/^ */  /'
check=$("$bin" query --project-dir "$work" -o csv \
  "select count(*) as n, count(*) filter (where status = 'shipped') as updated from main.orders" | tail -1)
echo "table after merge (rows, updated): $check"
# Full refresh of the same model over base + batch, for the ratio.
/usr/bin/time -o "$work/time_refresh" -f "%e %M" "$bin" run --project-dir "$work" --full-refresh >/dev/null 2>&1
refresh=$(cut -d' ' -f1 "$work/time_refresh")
refresh_node=$(node_time "$work/target/run_results.json")
echo "model time: full refresh ${refresh_node}; incremental ${inc_node}"
awk -v f="$refresh" -v i="$inc" -v r="$rows" -v fn="${refresh_node%% *}" -v in_="${inc_node%% *}" \
  'BEGIN{printf "merge rows=%d full-refresh=%.2f s incremental(1%%)=%.2f s ratio=%.1f%% (process wall); model only: %.3f s vs %.3f s = %.1f%%\n", r, f, i, 100*i/f, fn, in_, 100*in_/fn}'
