#!/usr/bin/env bash
# mine -> stage 2 -> eval of one arm of from_scratch_mlm.sh, from its stage-1 export, with configs/from_scratch.yaml's
# mine and stage2 sections as overrides: how the 5 Dec measurement finished (benchmarks/README.md, "From scratch").
#   bash benchmarks/from_scratch_tail.sh mlm|plain
set -euo pipefail
cd /work/main
R=runs/scratch-$1
start=$(date +%s)
echo "arm $1 tail start $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)" >> runs/scratch.log
.venv/bin/gte mine input_dir=$R/data/pairs out_dir=$R/data/mined model=$R/stage1/export \
  max_queries_per_source=300 max_corpus_per_source=600 negatives.k=3 negatives.rank_min=3 negatives.rank_max=50 \
  negatives.fill=random negatives.margin=0.0 negatives.max_score=1.0 embed.max_seq_len=96 embed.bf16=true overwrite=true
.venv/bin/gte train run.dir=$R/stage2 data.train_dir=$R/data/mined model.init_from=$R/stage1/export \
  data.query_max_len=32 data.doc_max_len=96 data.num_negatives=1 data.val_rows=0 train.global_batch_size=32 \
  train.chunk_size=96 train.grad_cache=false train.max_steps=15 train.checkpoint_every=10 train.precision=bf16 \
  train.log_every=1 optim.lr=2e-4 optim.warmup_steps=2 loss.temperature=0.05 log.wandb=off
.venv/bin/gte eval $R/stage2/export --data $R/data/pairs --tasks sts-b beir --bf16 --out $R/eval/stage2 --no-card
echo "arm $1 tail done $(date -u +%FT%TZ) wall $(( $(date +%s) - start )) s load: $(cut -d' ' -f1-3 /proc/loadavg)" >> runs/scratch.log
