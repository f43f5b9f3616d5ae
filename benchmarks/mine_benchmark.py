"""Mining benchmark (not a test): search-path throughput and peak RSS, and encoder throughput.

  .venv/bin/python benchmarks/mine_benchmark.py                    # 50k queries x 200k docs, flat + IVF + encoder
  .venv/bin/python benchmarks/mine_benchmark.py --queries 5000 --docs 20000 --encoder-texts 500   # quick

Search path: synthetic, clustered, L2-normalised 384-d embeddings (queries are noisy copies of their positive)
go through data_prep.mine_search.mine_embedded -- the exact code `gte mine` runs after embedding: faiss index build,
chunked top-(rank_max+pad) search, exact re-ranking, window/margin/ceiling rules and seeded sampling. Each index
kind runs in its own process so its peak RSS is its own. Encoder: the packaged all-MiniLM-L6-v2 embedding a few
thousand texts in bf16 (and fewer in fp32), so the embedding cost of a real corpus can be extrapolated.
Prints a JSON line per measurement and a markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(n_docs: int, n_queries: int, dim: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(1, n_docs // 100), dim), dtype=np.float32)
    docs = centers[rng.integers(0, len(centers), n_docs)] + 0.7 * rng.standard_normal((n_docs, dim), dtype=np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    pos = rng.integers(0, n_docs, n_queries)
    # Noise of norm ~0.6 around the positive: cos(query, positive) ~ 0.86, same-cluster docs ~ 0.6, as in real data.
    queries = docs[pos] + (0.6 / np.sqrt(dim)) * rng.standard_normal((n_queries, dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return docs, queries, pos.astype(np.int64)


def bench_search(args) -> dict:
    import numpy as np

    from data_prep.knn import IndexConfig, build_index, set_threads
    from data_prep.mine_config import NegativesConfig
    from data_prep.mine_search import mine_embedded
    from gte_model.core.text import mix64

    docs, queries, pos = synthetic(args.docs, args.queries, args.dim)
    base_rss = rss_mb()
    index_cfg = IndexConfig(ivf_threshold=1 if args.kind == "ivf" else args.docs + 1, nprobe=args.nprobe)
    set_threads(index_cfg.num_threads)
    neg = NegativesConfig(k=7, rank_min=3, rank_max=100)
    start = time.perf_counter()
    build_index(docs, index_cfg)  # timed alone once, to split build from search
    build_s = time.perf_counter() - start
    ids = np.arange(args.docs, dtype=np.uint64)
    start = time.perf_counter()
    negs, counts = mine_embedded(queries, docs, pos, mix64(np.arange(args.queries, dtype=np.uint64)), mix64(ids),
                                 mix64(ids + np.uint64(1)), neg, index_cfg)
    total_s = time.perf_counter() - start
    return {
        "bench": f"search-{args.kind}", "docs": args.docs, "queries": args.queries, "dim": args.dim,
        "nprobe": args.nprobe if args.kind == "ivf" else None, "index_build_s": round(build_s, 2),
        "mine_total_s": round(total_s, 2), "queries_per_s": round(args.queries / total_s, 1),
        "queries_per_s_excl_build": round(args.queries / max(total_s - build_s, 1e-9), 1),
        "mean_negatives": round(float(np.mean([len(n) for n in negs])), 2),
        "dropped_margin": counts["dropped_margin"], "dropped_ceiling": counts["dropped_ceiling"],
        "rss_after_data_mb": round(base_rss, 1), "peak_rss_mb": round(rss_mb(), 1),
        "threads": os.cpu_count(),
    }


def bench_encoder(args) -> list[dict]:
    import torch

    from gte_model import load_model

    model = load_model("all-MiniLM-L6-v2")
    rng = random.Random(0)
    words = "the of and a to in is for on with as by at from data model search index query document text".split()
    words += [f"w{i}" for i in range(2000)]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(10, 40))) for _ in range(args.encoder_texts)]
    out = []
    for bf16, n in ((True, len(texts)), (False, max(1, len(texts) // 4))):
        model.encode(texts[:64], batch_size=64, max_seq_len=256, bf16=bf16)  # warm-up
        start = time.perf_counter()
        model.encode(texts[:n], batch_size=64, max_seq_len=256, bf16=bf16)
        secs = time.perf_counter() - start
        tokens = sum(len(x) for x in model.tokenize_ids(texts[:n], 256))
        out.append({"bench": f"encoder-minilm-{'bf16' if bf16 else 'fp32'}", "texts": n,
                    "mean_tokens": round(tokens / n, 1), "texts_per_s": round(n / secs, 1),
                    "tokens_per_s": round(tokens / secs), "torch_threads": torch.get_num_threads(),
                    "peak_rss_mb": round(rss_mb(), 1)})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=200_000)
    p.add_argument("--queries", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--nprobe", type=int, default=32)
    p.add_argument("--encoder-texts", type=int, default=2000)
    p.add_argument("--kinds", default="flat,ivf,encoder")
    p.add_argument("--kind", help=argparse.SUPPRESS)  # internal: run one measurement in this process
    args = p.parse_args()
    if args.kind:
        results = bench_encoder(args) if args.kind == "encoder" else [bench_search(args)]
        for r in results:
            print(json.dumps(r), flush=True)
        return
    rows = []
    for kind in args.kinds.split(","):
        cmd = [sys.executable, __file__, "--kind", kind, "--docs", str(args.docs), "--queries", str(args.queries),
               "--dim", str(args.dim), "--nprobe", str(args.nprobe), "--encoder-texts", str(args.encoder_texts)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                print(line, flush=True)
                rows.append(json.loads(line))
    print(f"\nload average at the end: {os.getloadavg()}")
    print("| measurement | size | throughput | peak RSS |\n| --- | --- | --- | --- |")
    for r in rows:
        if r["bench"].startswith("search"):
            print(f"| {r['bench']} (build {r['index_build_s']} s) | {r['queries']} q x {r['docs']} docs | "
                  f"{r['queries_per_s']} q/s ({r['queries_per_s_excl_build']} q/s excl. build) | "
                  f"{r['peak_rss_mb']} MB |")
        else:
            print(f"| {r['bench']} | {r['texts']} texts, {r['mean_tokens']} tok | {r['texts_per_s']} texts/s "
                  f"({r['tokens_per_s']} tok/s) | {r['peak_rss_mb']} MB |")


if __name__ == "__main__":
    main()
