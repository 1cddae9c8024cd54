#!/usr/bin/env bash
# Dialect benchmark: `pipe build` (release) of the shared generated project (a dbt project, so DuckDB's semantics)
# and of the same project with `vars: {sql_dialect: datafusion}`, in the same run: what DuckDB mode costs.
#   bench/dialect.sh [ROWS ...]        (default: 1000000)
# Prints wall time and peak RSS of each (best of 3) and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared/bench}
export CARGO_TARGET_DIR="${PIPE_RELEASE_TARGET:-$HOME/.cache/pipe-target-release}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/pipe"
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(1000000)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
best_of() {
  local dir=$1 best="" best_rss=""
  for _ in 1 2 3; do
    rm -rf "$dir/warehouse" "$dir/target"
    /usr/bin/time -o "$work/time" -f "%e %M" "$bin" build --project-dir "$dir" >/dev/null 2>&1
    local line wall rss
    line=$(tail -1 "$work/time"); wall=${line% *}; rss=${line#* }
    if [ -z "$best" ] || awk "BEGIN{exit !($wall < $best)}"; then best=$wall; best_rss=$rss; fi
  done
  echo "$best $best_rss"
}
for rows in "${sizes[@]}"; do
  duck="$work/duckdb$rows"; fusion="$work/datafusion$rows"
  python3 "$shared/gen_project.py" --out "$duck" --rows "$rows" >/dev/null
  cp -r "$duck" "$fusion"
  printf 'vars:\n  sql_dialect: datafusion\n' >> "$fusion/dbt_project.yml"
  read -r d_wall d_rss < <(best_of "$duck")
  read -r f_wall f_rss < <(best_of "$fusion")
  awk -v r="$rows" -v dw="$d_wall" -v dr="$d_rss" -v fw="$f_wall" -v fr="$f_rss" 'BEGIN{
    printf "pipe build rows=%d sql_dialect=duckdb     wall=%.2f s rss=%d MiB\n", r, dw, dr/1024
    printf "pipe build rows=%d sql_dialect=datafusion wall=%.2f s rss=%d MiB\n", r, fw, fr/1024
    printf "ratio rows=%d duckdb/datafusion = %.3fx\n", r, dw/fw }'
done
