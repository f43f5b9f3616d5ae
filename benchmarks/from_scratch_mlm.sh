#!/usr/bin/env bash
# From scratch, MLM first or not (issue 24): the two arms of configs/from_scratch.yaml one after the other, each timed,
# with the machine's load before and after. Results: benchmarks/README.md, "From scratch: MLM first or not".
#   bash benchmarks/from_scratch_mlm.sh            # writes runs/scratch-mlm and runs/scratch-plain
# Equal wall time is set in optimizer steps: arm (b) gives stage 1 the steps arm (a) spends on stage 0, converted by
# the s/step of each measured beforehand (MLM_S1_STEPS below).
set -euo pipefail
cd "$(dirname "$0")/.."
MLM_S1_STEPS=${MLM_S1_STEPS:-36}   # stage-1 steps of arm (b): 18 + 29 MLM steps x (9.3 s / 14.9 s)
for arm in mlm plain; do
  extra=(run.stage0=true)
  [ "$arm" = plain ] && extra=(run.stage0=false "stage1.train.max_steps=$MLM_S1_STEPS")
  echo "arm $arm start $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
  start=$(date +%s)
  .venv/bin/gte run configs/from_scratch.yaml "run.dir=runs/scratch-$arm" "${extra[@]}" > "runs/scratch-$arm.log" 2>&1
  echo "arm $arm done $(date -u +%FT%TZ) wall $(( $(date +%s) - start )) s load: $(cut -d' ' -f1-3 /proc/loadavg)"
done
