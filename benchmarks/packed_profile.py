"""torch.profiler table of the packed (unpadded) forward + backward of the packaged MiniLM (not a test).

64 texts per step with Debian-like lengths (32 queries ~12 tokens, 32 documents ~70 with 15% at 128), random ids,
dropout on, 2 warm-up steps then 3 profiled; prints the top operators by self CPU time.

  .venv/bin/python benchmarks/packed_profile.py            # fp32
  .venv/bin/python benchmarks/packed_profile.py --bf16
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
    args = p.parse_args()
    rng = random.Random(0)
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

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
