"""Where our training step's time goes (companion of train_throughput.py; not a test).

Replays Trainer.step's public pieces on the benchmark's pairs dir with a timer around each: Trainer.prepare (sampler,
row fetch, tokenisation, chunking), forward (under the accelerator's autocast), loss, backward, clip + AdamW +
schedule. Steps
0..N-1 run twice: the second pass repeats the exact chunk shapes, so "pass 2 - pass 1" is the one-off cost of new
shapes (oneDNN builds kernels per shape, notably in bf16). --chunk-tokens sets train.chunk_tokens.

  .venv/bin/python benchmarks/train_profile.py --pairs-dir /tmp/tb/main/pairs-throughput --precision bf16
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from train_bench_workers import ours_config  # noqa: E402


def timed_step(trainer, step: int, clock: dict) -> None:
    """Trainer.step taken apart into its public pieces, each timed."""
    import torch

    from train.objective import make_loss_fn

    def tick(name, fn):
        start = time.perf_counter()
        out = fn()
        clock[name] += time.perf_counter() - start
        return out

    ready = tick("prepare (rows, tokens, chunks)", lambda: trainer.prepare(step))
    chunks = ready.chunks
    clock["padded tokens"] += sum(c.input_ids.numel() if trainer.packed else c["input_ids"].numel() for c in chunks)
    clock["real tokens"] += ready.tokens
    loss_fn = make_loss_fn(ready.batch, ready.order, trainer.cfg.loss, trainer.accelerator.device, ready.teacher)

    def forward():
        with trainer.accelerator.autocast():
            return [trainer.encode(c) for c in chunks]

    embs = tick("forward", forward)
    loss = tick("loss", lambda: loss_fn(torch.cat([e.float() for e in embs])))
    tick("backward", lambda: trainer.updater.backward(loss))
    tick("clip+AdamW+schedule", lambda: trainer.updater.update(loss.detach(), trainer.lr_at(step)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pairs-dir", required=True)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--chunk-size", type=int, default=16)
    p.add_argument("--chunk-tokens", type=int, default=0)
    p.add_argument("--padded", action="store_true", help="train.packed=false (padded chunks)")
    p.add_argument("--work-dir", default="/tmp/train-profile")
    args = p.parse_args()
    import torch

    from train.trainer import Trainer

    spec = {"run_dir": f"{args.work_dir}/run", "pairs_dir": args.pairs_dir, "cache_dir": f"{args.work_dir}/cache",
            "max_len": 128, "batch": 32, "chunk_size": args.chunk_size,
            "chunk_tokens": args.chunk_tokens, "precision": args.precision, "packed": not args.padded,
            "warmup": 0, "steps": args.steps}
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = Trainer(ours_config(spec))
    timed_step(trainer, 0, defaultdict(float))  # warm-up on a step outside the measured ones
    passes = []
    for _ in range(2):
        clock = defaultdict(float)
        for step in range(1, args.steps + 1):
            timed_step(trainer, step, clock)
        passes.append(clock)
    print(f"{args.precision}, chunk {args.chunk_size}, chunk tokens {args.chunk_tokens or 'off'}, "
          f"{args.steps} steps x 2 passes, threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}")
    print(f"{'ms per step':>22} {'pass 1 (new shapes)':>20} {'pass 2 (same shapes)':>21}")
    for name in passes[0]:
        a, b = (c[name] / args.steps for c in passes)
        scale = 1 if "tokens" in name else 1000
        print(f"{name:>22} {a * scale:20.0f} {b * scale:21.0f}")
    total = [sum(v for k, v in c.items() if "tokens" not in k) / args.steps for c in passes]
    print(f"{'total':>22} {total[0] * 1000:20.0f} {total[1] * 1000:21.0f}   -> {32 / total[1]:.2f} pairs/s (pass 2)")


if __name__ == "__main__":
    main()
