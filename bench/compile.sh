#!/usr/bin/env bash
# Compile benchmark: `pipe compile` (release) next to `dbt parse` on the same generated project, same run.
#   bench/compile.sh [N ...]        (default: 1000 10000)
# Prints, per size: wall time and peak RSS of pipe (best of 3) and of dbt parse (one run), and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared/bench}
# Release builds get their own target folder so they do not wait on (or evict) the test build.
export CARGO_TARGET_DIR="${PIPE_RELEASE_TARGET:-$HOME/.cache/pipe-target-release}"
cargo build --release --quiet
bin="$CARGO_TARGET_DIR/release/pipe"
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for n in "${sizes[@]}"; do
  dir="$work/p$n"
  python3 "$shared/gen_project.py" --out "$dir" --models "$n" >/dev/null
  # cold: no target folder (no plan cache, every compiled file created); warm: unchanged project, plan cache from
  # the previous run; no-plan: render, parse, graph only (compiled files in place).
  for variant in cold warm no-plan; do
    best=""; best_rss=""
    for _ in 1 2 3; do
      case $variant in
        cold) rm -rf "$dir/target"; mode="" ;;
        warm) mode="" ;;
        no-plan) mode="--no-plan" ;;
      esac
      /usr/bin/time -o "$work/time" -f "%e %M" "$bin" compile --project-dir "$dir" $mode >/dev/null 2>&1
      line=$(tail -1 "$work/time")
      wall=${line% *}; rss=${line#* }
      if [ -z "$best" ] || awk "BEGIN{exit !($wall < $best)}"; then best=$wall; best_rss=$rss; fi
    done
    echo "pipe compile ($variant) models=$n wall=${best} s rss=$((best_rss / 1024)) MiB"
    if [ "$variant" = cold ]; then cold=$best; fi
    if [ "$variant" = no-plan ]; then noplan=$best; fi
  done
  if [ -z "${SKIP_PEER:-}" ]; then
    peer=$(bash "$shared/peer.sh" parse "$dir")
    echo "$peer (models=$n)"
    peer_wall=$(echo "$peer" | sed -E 's/.*wall=([0-9.]+).*/\1/')
    awk -v c="$cold" -v q="$noplan" -v d="$peer_wall" -v n="$n" \
      'BEGIN{printf "ratio models=%d dbt-parse/pipe-no-plan = %.1fx, dbt-parse/pipe-cold-with-planning = %.1fx\n", n, d/q, d/c}'
  fi
done
