#!/usr/bin/env bash
# Issue 28 bisect (not a test): each commit's own benchmarks/train_throughput.py ("ours" only, its own source via a
# git worktree and PYTHONPATH), commits alternating within each precision and the order flipping between rounds.
#   benchmarks/step_bisect.sh "1d59a96 d06c479 a115d54 72dff71 08a052c" 2 8 2 > /tmp/bis28.log
set -euo pipefail
commits=(${1:-1d59a96 72dff71}); rounds=${2:-2}; steps=${3:-8}; warmup=${4:-2}
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel); py=$repo/.venv/bin/python; out=${OUT_DIR:-/tmp/bis28}
mkdir -p "$out"
for c in "${commits[@]}"; do [ -d "/tmp/wt28-$c" ] || git -C "$repo" worktree add -f "/tmp/wt28-$c" "$c" >/dev/null; done
for ((r = 0; r < rounds; r++)); do
  for p in fp32 bf16; do
    order=("${commits[@]}")
    if (( r % 2 == 1 )); then order=($(printf '%s\n' "${commits[@]}" | tac)); fi
    for c in "${order[@]}"; do
      line=$(cd "/tmp/wt28-$c" && PYTHONPATH="/tmp/wt28-$c" "$py" benchmarks/train_throughput.py --systems ours \
        --rounds 1 --steps "$steps" --warmup "$warmup" --precisions "$p" --cache-batches "" \
        --work-dir "$out/$c-$p-r$r" 2>"$out/$c-$p-r$r.err" | grep '^{' | head -1)
      echo "BISECT $c $p r$r $line"
    done
  done
done
