"""torch.profiler table of the packed (unpadded) forward + backward of the packaged MiniLM (not a test).

64 texts per step with Debian-like lengths (32 queries ~12 tokens, 32 documents ~70 with 15% at 128), random ids,
dropout on, 2 warm-up steps then 3 profiled; prints the top operators by self CPU time (--shapes: by operator and
input shape; --threads N: torch threads). --groups prints instead how much attention work the CPU attention groups
pad: padded scores (rows x width^2 per group) against the real rows' (length^2), over 20 such batches.

  .venv/bin/python benchmarks/packed_profile.py            # fp32
  .venv/bin/python benchmarks/packed_profile.py --bf16 --shapes --threads 1
  .venv/bin/python benchmarks/packed_profile.py --groups
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gte_model import load_model, pack  # noqa: E402


def lengths(rng: random.Random) -> list[int]:
    queries = [max(4, min(128, int(rng.gauss(12, 4)))) for _ in range(32)]
    docs = [128 if rng.random() < 0.146 else max(8, min(127, int(rng.expovariate(1 / 60)) + 10)) for _ in range(32)]
    return sorted(queries + docs, reverse=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--shapes", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--groups", action="store_true")
    args = p.parse_args()
    rng = random.Random(0)
    if args.groups:
        padded = real = groups = 0
        for _ in range(20):
            batch = pack([[7] * n for n in lengths(rng)])
            padded += sum(rows * width * width for *_, rows, width in batch.groups)
            real += int((batch.lengths**2).sum())
            groups += len(batch.groups)
        print(f"padded scores {padded:,} / real {real:,} = {padded / real:.2f}x; {groups / 20:.1f} groups per batch")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model("all-MiniLM-L6-v2").train()

    def step() -> None:
        batch = pack([[rng.randrange(1000, 20000) for _ in range(n)] for n in lengths(rng)])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            emb = model(packed=batch)
        emb.float().pow(2).sum().backward()

    for _ in range(2):
        step()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
        for _ in range(args.steps):
            step()
    print(prof.key_averages(group_by_input_shape=args.shapes).table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
