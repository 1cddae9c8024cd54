#!/usr/bin/env bash
# Build benchmark: `pipe build` (release) next to dbt-duckdb (`peer.sh build`) and DuckDB alone
# (`duckdb_plain.py`) on the same generated medallion project, in the same run.
#   bench/build.sh [ROWS ...]        (default: 1000000 10000000)
#   MEMORY_LIMIT=1GiB bench/build.sh  pipe builds with `--memory-limit` (spilling sorts, joins, aggregates, dedupe)
# Prints wall time, rows/s and peak RSS of pipe (best of 2), the peers' figures, and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared/bench}
export CARGO_TARGET_DIR="${PIPE_RELEASE_TARGET:-$HOME/.cache/pipe-target-release}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/pipe"
venv=${PEER_VENV:-$HOME/.cache/pipe-peer-venv}
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(1000000 10000000)
limit=()
[ -z "${MEMORY_LIMIT:-}" ] || limit=(--memory-limit "$MEMORY_LIMIT")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for rows in "${sizes[@]}"; do
  dir="$work/r$rows"
  python3 "$shared/gen_project.py" --out "$dir" --rows "$rows" >/dev/null
  best=""; best_rss=""
  for _ in 1 2; do
    rm -rf "$dir/warehouse" "$dir/target"
    /usr/bin/time -o "$work/time" -f "%e %M" "$bin" build --project-dir "$dir" "${limit[@]}" >/dev/null 2>&1
    line=$(tail -1 "$work/time")
    wall=${line% *}; rss=${line#* }
    if [ -z "$best" ] || awk "BEGIN{exit !($wall < $best)}"; then best=$wall; best_rss=$rss; fi
  done
  awk -v w="$best" -v r="$rows" -v m="$best_rss" -v l="${MEMORY_LIMIT:-none}" 'BEGIN{printf "pipe build    rows=%d wall=%.2f s rows/s=%.0f rss=%d MiB memory-limit=%s\n", r, w, r/w, m/1024, l}'
  if [ -z "${SKIP_PEER:-}" ]; then
    peer=$(bash "$shared/peer.sh" build "$dir")
    echo "$peer (rows=$rows)"
    peer_wall=$(echo "$peer" | sed -E 's/.*wall=([0-9.]+).*/\1/')
    (cd "$dir" && DBT_PROFILES_DIR=. "$venv/bin/dbt" compile >/dev/null 2>&1)
    plain=$("$venv/bin/python" "$shared/duckdb_plain.py" "$dir")
    echo "$plain (rows=$rows)"
    plain_wall=$(echo "$plain" | sed -E 's/.* in ([0-9.]+) s.*/\1/')
    awk -v p="$best" -v d="$peer_wall" -v q="$plain_wall" -v r="$rows" \
      'BEGIN{printf "ratio rows=%d dbt-duckdb/pipe = %.2fx, pipe/duckdb-alone = %.2fx\n", r, d/p, p/q}'
  fi
done
