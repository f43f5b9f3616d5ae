#!/usr/bin/env bash
# Fine-tune a backbone (default all-mpnet-base-v2) on a finished quickstart's mined data with our trainer and with
# sentence-transformers' trainer for the same wall time, same loss (InfoNCE / MNRL at temperature 0.05 = scale 20),
# same data, batch and learning rate; evaluate both on the quickstart's held-out sets and STS-B (issue 12).
#
#   bash benchmarks/backbone_finetune.sh RUN_DIR OUT_DIR [MODEL] [STEPS]
#   bash benchmarks/backbone_finetune.sh runs/quickstart /tmp/mpnet-cmp all-mpnet-base-v2 80
#
# RUN_DIR: a finished `gte run configs/quickstart.yaml` (its data/mined and eval settings are reused).
# BASE_RESULTS=path/results.json reuses an evaluation of MODEL made with the same settings.
# Ours trains STEPS steps; its `gte train` wall time (data loading, checkpoints and export included) becomes the
# sentence-transformers budget (benchmarks/st_baseline.py --budget-seconds, which counts trainer.train() only).
# Writes OUT_DIR/{stage2 (ours), eval/stage2, baseline_st (theirs, comparison.md)}.
set -euo pipefail
run_dir=$(realpath "$1"); out=$2; model=${3:-all-mpnet-base-v2}; steps=${4:-80}
py=${PYTHON:-.venv/bin/python}; gte=${GTE:-.venv/bin/gte}
mkdir -p "$out"/data "$out"/stage1 "$out"/eval/base "$out"/phases
ln -sfn "$run_dir/data/mined" "$out/data/mined"
ln -sfn "$run_dir/data/pairs" "$out/data/pairs"
"$py" - "$run_dir" "$out" "$model" <<'EOF'
import sys
from omegaconf import OmegaConf
run_dir, out, model = sys.argv[1:]
cfg = OmegaConf.load(f"{run_dir}/config.yaml")
OmegaConf.save(OmegaConf.create({"eval": {k: cfg.eval[k] for k in ("tasks", "bf16", "batch_size", "beir_sources")}}),
               f"{out}/config.yaml")
# st_baseline's layout: no stage 1 here (0 steps), stage 2 = our fine-tuning
OmegaConf.save(OmegaConf.create({"model": {"init_from": model}, "train": {"max_steps": 0}}), f"{out}/stage1/config.yaml")
EOF
beir=()
for s in $("$py" -c "from omegaconf import OmegaConf; print(' '.join(OmegaConf.load('$out/config.yaml').eval.beir_sources))"); do
  beir+=("$run_dir/data/pairs/beir/$s")
done
common=(data.train_dir="$out/data/mined" data.num_negatives=1 data.query_max_len=64 data.doc_max_len=128
        train.global_batch_size=32 train.chunk_size=96 train.grad_cache=false train.max_steps="$steps"
        train.checkpoint_every="$steps" train.eval_every=0 data.val_rows=0 train.precision=bf16 train.seed=7 optim.lr=2e-5
        optim.warmup_steps=$((steps / 10)) loss.kind=infonce loss.temperature=0.05 log.wandb=off)
start=$(date +%s.%N)
"$gte" train configs/finetune.yaml run.dir="$out/stage2" model.init_from="$model" "${common[@]}"
ours=$(echo "$(date +%s.%N) - $start" | bc)
echo "ours: $steps steps in $ours s"
echo '{"phase": "stage1", "seconds": 0}' > "$out/phases/stage1.json"
echo "{\"phase\": \"stage2\", \"seconds\": $ours}" > "$out/phases/stage2.json"
"$gte" eval "$out/stage2/export" --tasks sts-b beir --beir "${beir[@]}" --bf16 --out "$out/eval/stage2" --no-card
if [ -n "${BASE_RESULTS:-}" ]; then  # the base model's evaluation with the same settings, e.g. the quickstart's
  cp "$BASE_RESULTS" "$out/eval/base/results.json"   # eval/teacher/results.json for all-mpnet-base-v2
else
  "$gte" eval "$model" --tasks sts-b beir --beir "${beir[@]}" --bf16 --out "$out/eval/base" --no-card
fi
# st_baseline reads stage2/config.yaml (written by gte train): same sources, k, lengths, batch, lr, bf16, seed
"$py" benchmarks/st_baseline.py "$out" --budget-seconds "$ours" --scale 20 --mini-batch-size 0
