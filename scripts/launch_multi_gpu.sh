#!/usr/bin/env bash
# Train one stage on every GPU of this machine (DDP by default; DeepSpeed with ACCEL=deepspeed_zero1|deepspeed_zero2).
#
#   scripts/launch_multi_gpu.sh configs/pretrain.yaml run.dir=runs/stage1                   # 8 GPUs, DDP
#   NUM_GPUS=4 ACCEL=deepspeed_zero2 scripts/launch_multi_gpu.sh configs/finetune.yaml train.grad_cache=false
#   CPU check: NUM_GPUS=2 CPU=1 scripts/launch_multi_gpu.sh configs/tiny.yaml run.dir=runs/tiny-ddp
#              NUM_GPUS=2 CPU=1 ACCEL=deepspeed_zero1 scripts/launch_multi_gpu.sh configs/tiny.yaml run.dir=runs/tiny-z1
#
# train.global_batch_size is the batch over ALL processes and must divide by the process count. The first line of
# the training log says what the launch got: "gte train: world_size=2 (DDP over gloo on cpu), 8 pairs per process".
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:?usage: scripts/launch_multi_gpu.sh CONFIG [key=value ...]}
shift
ACCEL=${ACCEL:-ddp}
if [ -z "${NUM_GPUS:-}" ]; then
    NUM_GPUS=$(command -v nvidia-smi >/dev/null && nvidia-smi --list-gpus | wc -l || echo 1)
fi
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
if [ "${CPU:-0}" = "1" ]; then
    # The same launcher config, its processes on the CPU: with no GPU visible the trainer joins them in a gloo group
    # (DDP or DeepSpeed). Not `accelerate launch --cpu`: that starts one process and turns DeepSpeed off.
    export CUDA_VISIBLE_DEVICES="" DS_ACCELERATOR=cpu
fi
exec .venv/bin/accelerate launch --config_file "configs/accelerate/${ACCEL}.yaml" --num_processes "$NUM_GPUS" \
    -m train "$CONFIG" "$@"
