#!/usr/bin/env bash
# Where a build's time goes: builds the generated medallion (release, `--memory-limit`) and prints, from the run
# history, each model's wall seconds and the operators that computed longest (`pipe.operator_runs`: the executed
# plans' metrics, as EXPLAIN ANALYZE gives them), then the compute seconds summed by operator kind.
#   bench/profile.sh ROWS            (default 10000000)
#   MEMORY_LIMIT=4GiB (default)      KEEP_DATA=DIR reuses/keeps the generated project in DIR/rROWS
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared/bench}
export CARGO_TARGET_DIR="${PIPE_RELEASE_TARGET:-$HOME/.cache/pipe-target-release}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/pipe"
rows=${1:-10000000}
limit=${MEMORY_LIMIT:-4GiB}
work=${KEEP_DATA:-$(mktemp -d)}
mkdir -p "$work"
[ -n "${KEEP_DATA:-}" ] || trap 'rm -rf "$work"' EXIT
dir="$work/r$rows"
[ -f "$dir/dbt_project.yml" ] || python3 "$shared/gen_project.py" --out "$dir" --rows "$rows" >/dev/null
rm -rf "$dir/warehouse" "$dir/target"
/usr/bin/time -o "$work/time" -f "%e %M" "$bin" build --project-dir "$dir" --memory-limit "$limit" >/dev/null 2>&1
read -r wall rss < <(tail -1 "$work/time")
echo "pipe build rows=$rows memory-limit=$limit wall=${wall}s rss=$((rss / 1024))MiB"
q() { "$bin" query --project-dir "$dir" "$1"; }
echo "== per model (seconds, rows written)"
q "select relation, materialized, round(seconds, 2) as seconds, rows_written from pipe.node_runs order by seconds desc"
echo "== slowest operators (compute seconds over all partitions; spills)"
q "select relation, plan, position, operator, output_rows, round(compute_seconds, 2) as compute_s,
          spill_count, spilled_bytes, substr(detail, 1, 90) as detail
   from pipe.operator_runs where compute_seconds is not null order by compute_seconds desc limit 25"
echo "== compute seconds by operator kind"
q "select operator, count(*) as operators, round(sum(compute_seconds), 2) as compute_s,
          sum(coalesce(spilled_bytes, 0)) as spilled_bytes
   from pipe.operator_runs group by operator order by compute_s desc nulls last"
