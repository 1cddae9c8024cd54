#!/usr/bin/env bash
# The generated medallion built by the local engine and by `pipe ballista` processes on this machine (a scheduler
# and EXECUTORS executors), on the same project in the same run: both wall times, the ratio, a check that the two
# builds wrote the same tables, and where the cluster build's time went (per model, from the run history).
#   bench/cluster.sh ROWS            the generated event medallion (default 10000000 events)
#   bench/cluster.sh tpch SF         TPC-H at scale factor SF (bench/tpch_project.py; tpchgen-cli from PyPI)
#   EXECUTORS=2 (default)            KEEP_DATA=DIR reuses/keeps the generated project in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared/bench}
export CARGO_TARGET_DIR="${PIPE_RELEASE_TARGET:-$HOME/.cache/pipe-target-release}"
cargo build --release --quiet --features ballista
bin="$CARGO_TARGET_DIR/release/pipe"
executors=${EXECUTORS:-2}
work=${KEEP_DATA:-$(mktemp -d)}
mkdir -p "$work"
if [ "${1:-}" = tpch ]; then
  sf=${2:-1}
  rows="tpch-sf$sf"
  dir="$work/$rows"
  command -v tpchgen-cli >/dev/null || pip install --quiet tpchgen-cli || pip install --quiet --user tpchgen-cli
  export PATH="$PATH:$HOME/.local/bin"
  [ -f "$dir/pipe.yml" ] || python3 bench/tpch_project.py --out "$dir" --sf "$sf"
else
  rows=${1:-10000000}
  dir="$work/r$rows"
  [ -f "$dir/dbt_project.yml" ] || python3 "$shared/gen_project.py" --out "$dir" --rows "$rows" >/dev/null
fi
cluster=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$cluster"
  [ -n "${KEEP_DATA:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; exit 1; }
cores=$(nproc)
per_executor=$(( cores / executors > 0 ? cores / executors : 1 ))
scheduler=$(free_port)
"$bin" ballista scheduler --bind "127.0.0.1:$scheduler" >"$cluster/scheduler.log" 2>&1 &
pids+=($!)
wait_port "$scheduler"
for i in $(seq "$executors"); do
  port=$(free_port); grpc=$(free_port)
  mkdir -p "$cluster/executor-$i"
  "$bin" ballista executor --scheduler "127.0.0.1:$scheduler" --port "$port" --grpc-port "$grpc" \
    --concurrent-tasks "$per_executor" --work-dir "$cluster/executor-$i" >"$cluster/executor-$i.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
done
sleep 6 # executors register with their first heartbeat (5 s)

# Every model table's rows, order-independent: one digest per relation. Floating-point values are rounded to 9
# significant digits: a sum of DOUBLEs depends on the order partial sums are added in, locally as on a cluster.
round_floats() {
  python3 -c '
import csv, sys
def cell(v):
    if any(c in v for c in ".eE") and not any(c.isalpha() and c not in "eE" for c in v):
        try:
            return "%.9g" % float(v)
        except ValueError:
            return v
    return v
for row in csv.reader(sys.stdin):
    print(",".join(cell(v) for v in row))'
}
digests() {
  for relation in $("$bin" query --project-dir "$dir" -o csv \
      "select distinct relation from pipe.node_runs where materialized <> 'view' order by 1" | tail -n +2); do
    printf '%s %s\n' "$relation" "$("$bin" query --project-dir "$dir" -o csv "select * from $relation" | tail -n +2 | round_floats | sort | md5sum | cut -c1-12)"
  done
}

build() {
  rm -rf "$dir/warehouse" "$dir/target"
  /usr/bin/time -o "$work/time" -f "%e %M" "$bin" build --project-dir "$dir" "$@" >"$work/build.log" 2>&1 \
    || { tail -n 30 "$work/build.log"; exit 1; }
  tail -1 "$work/time"
}

read -r local_wall local_rss < <(build --engine local)
digests >"$work/local.digests"
read -r cluster_wall cluster_rss < <(build --scheduler "df://127.0.0.1:$scheduler")
digests >"$work/cluster.digests"
here=$(grep -c "not the cluster" "$work/build.log" || true)
echo "rows=$rows executors=$executors x $per_executor task slots"
echo "local   build wall=${local_wall}s client rss=$((local_rss / 1024))MiB"
echo "cluster build wall=${cluster_wall}s client rss=$((cluster_rss / 1024))MiB ($here models ran on the client)"
python3 -c "print(f'cluster/local = {$cluster_wall / $local_wall:.2f}x')"
if cmp -s "$work/local.digests" "$work/cluster.digests"; then
  echo "tables: identical ($(wc -l <"$work/local.digests") relations)"
else
  echo "tables: DIFFER"; diff "$work/local.digests" "$work/cluster.digests" || true; exit 1
fi
echo "== cluster build, per model (seconds)"
"$bin" query --project-dir "$dir" \
  "select relation, materialized, round(seconds, 2) as seconds, rows_written from pipe.node_runs order by seconds desc"
