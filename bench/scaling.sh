#!/usr/bin/env bash
# Scaling benchmark: the generated medallion at growing sizes, built by `pipe build --memory-limit` (release) and
# by DuckDB alone on the same compiled SQL with the same memory limit (`duckdb_limited.py`), in the same run;
# dbt-duckdb's figure beside them unless SKIP_PEER is set.
#   bench/scaling.sh [ROWS ...]     (default: 1000000 10000000 100000000)
#   MEMORY_LIMIT=4GiB (default)     KEEP_DATA=DIR keeps the generated projects in DIR for the next run
# Prints wall time and peak RSS per size and engine, the ratios, and writes bench/scaling.tsv and
# bench/scaling.png (drawn with plotters by bench/plot).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared/bench}
export CARGO_TARGET_DIR="${PIPE_RELEASE_TARGET:-$HOME/.cache/pipe-target-release}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/pipe"
venv=${PEER_VENV:-$HOME/.cache/pipe-peer-venv}
limit=${MEMORY_LIMIT:-4GiB}
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(1000000 10000000 100000000)
work=${KEEP_DATA:-$(mktemp -d)}
mkdir -p "$work"
[ -n "${KEEP_DATA:-}" ] || trap 'rm -rf "$work"' EXIT
figures=bench/scaling.tsv
: > "$figures"
timed() { # timed OUT -- command...: runs it, appends "wall rss_kib" to OUT
  local out=$1; shift 2
  /usr/bin/time -o "$out" -f "%e %M" "$@" >/dev/null 2>"$out.err" || { cat "$out.err" >&2; return 1; }
}
printf "%-12s %12s %10s %10s\n" engine events wall_s rss_mib
for rows in "${sizes[@]}"; do
  dir="$work/r$rows"
  [ -f "$dir/dbt_project.yml" ] || python3 "$shared/gen_project.py" --out "$dir" --rows "$rows" >/dev/null
  rm -rf "$dir/warehouse" "$dir/target" "$dir/.duckdb_tmp"
  timed "$work/t" -- "$bin" build --project-dir "$dir" --memory-limit "$limit"
  read -r wall rss < <(tail -1 "$work/t")
  echo "pipe $rows $wall $((rss / 1024))" >> "$figures"
  rm -rf "$dir/warehouse"
  (cd "$dir" && DBT_PROFILES_DIR=. "$venv/bin/dbt" compile >/dev/null 2>&1)
  timed "$work/t" -- "$venv/bin/python" bench/duckdb_limited.py "$dir" "$limit"
  read -r wall rss < <(tail -1 "$work/t")
  echo "duckdb-alone $rows $wall $((rss / 1024))" >> "$figures"
  rm -rf "$dir/.duckdb_tmp"
  if [ -z "${SKIP_PEER:-}" ]; then
    peer=$(bash "$shared/peer.sh" build "$dir")
    wall=$(echo "$peer" | sed -E 's/.*wall=([0-9.]+).*/\1/')
    rss=$(echo "$peer" | sed -nE 's/.*rss=([0-9]+).*/\1/p')
    echo "dbt-duckdb $rows $wall $(( ${rss:-0} / 1024 ))" >> "$figures"
  fi
  grep " $rows " "$figures" | while read -r engine r w m; do printf "%-12s %12d %10.2f %10d\n" "$engine" "$r" "$w" "$m"; done
done
awk '$1 == "pipe" {p[$2] = $3} $1 == "duckdb-alone" {d[$2] = $3}
     END {for (r in p) if (r in d) printf "ratio events=%d pipe/duckdb-alone = %.2fx\n", r, p[r] / d[r]}' "$figures"
cargo run --quiet --release --manifest-path bench/plot/Cargo.toml --target-dir "$CARGO_TARGET_DIR/plot" -- "$figures" bench/scaling.png
echo "wrote $figures and bench/scaling.png"
