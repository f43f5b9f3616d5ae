#!/usr/bin/env bash
# Train one stage on every GPU of this machine (DDP by default; DeepSpeed with ACCEL=deepspeed_zero1|deepspeed_zero2).
#
#   scripts/launch_multi_gpu.sh configs/pretrain.yaml run.dir=runs/stage1
#   NUM_GPUS=4 ACCEL=deepspeed_zero2 scripts/launch_multi_gpu.sh configs/finetune.yaml train.grad_cache=false
#   CPU check: NUM_GPUS=2 CPU=1 scripts/launch_multi_gpu.sh configs/tiny.yaml run.dir=runs/tiny-ddp
#
# train.global_batch_size is the batch over ALL processes and must divide by the process count.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:?usage: scripts/launch_multi_gpu.sh CONFIG [key=value ...]}
shift
ACCEL=${ACCEL:-ddp}
if [ -z "${NUM_GPUS:-}" ]; then
    NUM_GPUS=$(command -v nvidia-smi >/dev/null && nvidia-smi --list-gpus | wc -l || echo 1)
fi
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
EXTRA=()
if [ "${CPU:-0}" = "1" ]; then
    EXTRA+=(--multi_gpu)  # processes on the CPU: the trainer then joins them in a gloo group
    ACCEL_ARGS=()
else
    ACCEL_ARGS=(--config_file "configs/accelerate/${ACCEL}.yaml")
fi
exec .venv/bin/accelerate launch "${ACCEL_ARGS[@]}" "${EXTRA[@]}" --num_processes "$NUM_GPUS" \
    -m train "$CONFIG" "$@"
