#!/usr/bin/env bash
# Issue 28 (not a test): what the run loop's per-step malloc_trim (train/loop.py: release_free_memory() after every
# trainer.step) adds to a step. train_throughput.py times Trainer.step alone, so it never sees the trim; here a
# sitecustomize (only on PYTHONPATH for this run, product code untouched) wraps Trainer.step to trim after each step
# as the loop does (TRIM=1) or not (TRIM=0), alternating A B A B in one script.
#   benchmarks/step_trim_ab.sh 72dff71 2 8 2 > /tmp/trim28.log
set -euo pipefail
c=${1:-72dff71}; rounds=${2:-2}; steps=${3:-8}; warmup=${4:-2}
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel); py=$repo/.venv/bin/python; out=${OUT_DIR:-/tmp/trim28}
site=$out/site; mkdir -p "$site"
[ -d "/tmp/wt28-$c" ] || git -C "$repo" worktree add -f "/tmp/wt28-$c" "$c" >/dev/null
cat > "$site/sitecustomize.py" <<'PY'
import os

if os.environ.get("TRIM") == "1" and "--worker" in __import__("sys").argv:
    import train.trainer as _tt
    from gte_model.core.memory import release_free_memory as _trim

    _orig = _tt.Trainer.step

    def _step(self, step):
        stats = _orig(self, step)
        _trim()
        return stats

    _tt.Trainer.step = _step
PY
for ((r = 0; r < rounds; r++)); do
  for p in fp32 bf16; do
    order=(0 1); if (( r % 2 == 1 )); then order=(1 0); fi
    for t in "${order[@]}"; do
      line=$(cd "/tmp/wt28-$c" && TRIM=$t PYTHONPATH="/tmp/wt28-$c:$site" "$py" benchmarks/train_throughput.py \
        --systems ours --rounds 1 --steps "$steps" --warmup "$warmup" --precisions "$p" --cache-batches "" \
        --work-dir "$out/t$t-$p-r$r" 2>"$out/t$t-$p-r$r.err" | grep '^{' | head -1)
      echo "TRIM $c trim=$t $p r$r $line"
    done
  done
done
