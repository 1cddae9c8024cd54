#!/usr/bin/env bash
# Docs benchmark: `pipe docs generate` (release) next to `dbt docs generate` on the same generated project, same run.
#   bench/docs.sh [N ...]        (default: 5000)
# Prints, per size: wall time and peak RSS of pipe (best of 3; every model planned for its column lineage), the
# size of the site, and dbt's time (one run, with --empty-catalog: no warehouse to read), and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared/bench}
export CARGO_TARGET_DIR="${PIPE_RELEASE_TARGET:-$HOME/.cache/pipe-target-release}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/pipe"
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(5000)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
VENV=${PEER_VENV:-$HOME/.cache/pipe-peer-venv}
for n in "${sizes[@]}"; do
  dir="$work/p$n"
  python3 "$shared/gen_project.py" --out "$dir" --models "$n" >/dev/null
  best=""; best_rss=""
  for _ in 1 2 3; do
    rm -rf "$dir/target"
    /usr/bin/time -o "$work/time" -f "%e %M" "$bin" docs generate --project-dir "$dir" >/dev/null 2>&1
    line=$(tail -1 "$work/time"); wall=${line% *}; rss=${line#* }
    if [ -z "$best" ] || awk "BEGIN{exit !($wall < $best)}"; then best=$wall; best_rss=$rss; fi
  done
  size=$(du -sk "$dir/target/docs" | cut -f1)
  echo "pipe docs generate models=$n wall=${best} s rss=$((best_rss / 1024)) MiB site=$((size / 1024)) MiB"
  if [ -z "${SKIP_PEER:-}" ] && [ -x "$VENV/bin/dbt" ]; then
    rm -rf "$dir/target"
    peer=$(cd "$dir" && DBT_PROFILES_DIR=. /usr/bin/time -f "dbt docs generate wall=%e s rss=%M KB" \
      "$VENV/bin/dbt" docs generate --empty-catalog 2>&1 >/dev/null | tail -1)
    echo "$peer (models=$n)"
    peer_wall=$(echo "$peer" | sed -E 's/.*wall=([0-9.]+).*/\1/')
    awk -v p="$best" -v d="$peer_wall" -v n="$n" 'BEGIN{printf "ratio models=%d dbt-docs-generate/pipe = %.1fx\n", n, d/p}'
  fi
done
