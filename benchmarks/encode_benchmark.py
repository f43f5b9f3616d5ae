"""encode throughput of the packaged all-MiniLM-L6-v2: fp32 vs bf16 autocast on 2,000 STS-B sentences.

Runs fp32 and bf16 alternately (3 rounds each, best of each kept) in one process so machine noise hits both alike,
and reports sentences/s, the speed ratio and the cosine agreement between the two precisions.

  .venv/bin/python benchmarks/encode_benchmark.py [--n 2000] [--batch-size 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gte_model import load_model  # noqa: E402
from train.eval.sts import load_stsb  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    s1, s2, _ = load_stsb("test")
    texts = list(dict.fromkeys(s1 + s2))[: args.n]
    model = load_model("all-MiniLM-L6-v2")
    model.encode(texts[:64], bf16=True)  # warm-up: first bf16 call builds oneDNN kernels
    best = {"fp32": float("inf"), "bf16": float("inf")}
    out = {}
    for _ in range(args.rounds):
        for name in ("fp32", "bf16"):
            start = time.perf_counter()
            out[name] = model.encode(texts, batch_size=args.batch_size, bf16=name == "bf16", show_progress=False)
            best[name] = min(best[name], time.perf_counter() - start)
    cos = (out["fp32"] * out["bf16"]).sum(axis=1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {len(texts)} texts, batch {args.batch_size}")
    for name in ("fp32", "bf16"):
        print(f"{name}: {len(texts) / best[name]:7.1f} sentences/s  ({best[name]:.2f} s)")
    print(f"bf16 / fp32 speed: {best['fp32'] / best['bf16']:.2f}x")
    print(f"cosine(fp32, bf16): mean {cos.mean():.5f}  min {cos.min():.5f}  p1 {np.percentile(cos, 1):.5f}")


if __name__ == "__main__":
    main()
