"""Loss memory benchmark (not a test): peak RSS and wall time of the GTE loss's forward + backward on CPU, one block
[r, C] (unchunked) against row chunks (loss.row_chunk), at growing global batch N.

  nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/loss_memory.py --max-gib 7  # N = 4,096 .. 65,536
  nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/loss_memory.py --sizes 65536 --max-seconds 3600
                      # 65,536 chunked even if slow (~20 min on one thread); unchunked it needs a 64 GiB block

Inputs: random unit vectors, H=384, K=0 (no hard negatives), kind=gte, temperature 0.01, one process (every row is
an anchor: r = N, C = 4N). Each setting runs in a fresh subprocess so ru_maxrss is its own ("start": after a warm-up,
before the loss); the subprocess caps its address space at --max-gib above its start (an allocation beyond it fails
there, not on the machine). A setting that would not fit or would run too long is skipped with the reason, predicted
from the measured smaller N: the unchunked block grows as N^2 in memory, and every path as N^2 in time. Prints a
JSON line per setting and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

H = 384
GIB = 2**30


def run_one(n: int, row_chunk: int, max_gib: float) -> dict:
    """Child process: one forward + backward of the loss; peak RSS and seconds."""
    import torch

    from train.loss import contrastive_loss, rows_per_chunk

    with open("/proc/self/statm") as fh:
        start_vm = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (start_vm + int(max_gib * GIB), resource.RLIM_INFINITY))
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(n, H, generator=g), dim=-1).requires_grad_()  # [N, H]
    d = torch.nn.functional.normalize(torch.randn(n, H, generator=g), dim=-1).requires_grad_()  # [N, H]
    chunk = rows_per_chunk("gte", n, 0, row_chunk)
    w = torch.randn(64, H, requires_grad=True)  # warm-up: the matmul libraries' pages count as RSS once touched
    contrastive_loss(w, w.detach().clone().requires_grad_(), row_chunk=8).backward()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        started = time.perf_counter()
        loss = contrastive_loss(q, d, kind="gte", temperature=0.01, row_chunk=row_chunk)
        loss.backward()
        seconds = time.perf_counter() - started
    except RuntimeError as err:  # the address-space cap: this setting does not fit
        return {"n": n, "row_chunk": row_chunk, "error": str(err).splitlines()[0][:120]}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"n": n, "row_chunk": row_chunk, "rows_per_chunk": min(chunk, n), "chunks": -(-n // chunk),
            "base_gib": base / GIB, "peak_gib": peak / GIB, "seconds": seconds, "loss": loss.item()}


def measure(n: int, row_chunk: int, max_gib: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", str(n), str(row_chunk), "--max-gib", str(max_gib)]
    # glibc's dynamic mmap threshold would serve freed blocks of up to 32 MiB from the heap and keep them resident
    # (RSS then over-counts live tensors by hundreds of MiB); a fixed 1 MiB threshold returns every block on free.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        return {"n": n, "row_chunk": row_chunk, "error": f"exit {out.returncode}: {out.stderr.strip()[-200:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def settings(sizes: list[int]) -> list[tuple[int, int, str]]:
    """(N, loss.row_chunk, label): one block (row_chunk=N), automatic (0), and 1,024-row chunks."""
    from train.loss import rows_per_chunk

    plan = []
    for n in sizes:
        plan.append((n, n, "unchunked"))
        auto = rows_per_chunk("gte", n, 0)
        if auto < n:
            plan.append((n, 0, "chunked (auto)"))
        if n > 1024 and auto != 1024:
            plan.append((n, 1024, "chunked"))
    return plan


def skip_reason(n: int, row_chunk: int, done: list[dict], max_gib: float, max_seconds: float) -> str:
    """Why a setting is not run, predicted (N^2 scaling) from the largest smaller N measured alike; '' = run it."""
    unchunked = row_chunk == n
    block_gib = n * 4 * n * 4 / GIB  # one [N, 4N] fp32 block; the unchunked path holds several
    if unchunked and block_gib > max_gib:
        return f"skipped: one [N, 4N] fp32 block alone is {block_gib:.0f} GiB (> --max-gib {max_gib:g})"
    alike = [r for r in done if "error" not in r and r["n"] < n and (r["row_chunk"] == r["n"]) == unchunked]
    if not alike:
        return ""
    ref = max(alike, key=lambda r: r["n"])
    grow = (n / ref["n"]) ** 2
    if unchunked and ref["base_gib"] + (ref["peak_gib"] - ref["base_gib"]) * grow > max_gib:
        need = (ref["peak_gib"] - ref["base_gib"]) * grow
        return f"skipped: needs ~{need:.0f} GiB (> --max-gib {max_gib:g}), predicted from N={ref['n']}"
    if ref["seconds"] * grow > max_seconds:
        seconds = ref["seconds"] * grow
        return f"skipped: ~{seconds:.0f} s (> --max-seconds {max_seconds:g}), predicted from N={ref['n']}"
    return ""


def table(rows: list[dict]) -> str:
    lines = ["| N | path | rows per chunk | peak RSS | peak - start | loss fwd+bwd | loss |", "|---" * 7 + "|"]
    for r in rows:
        if "error" in r or "skipped" in r:
            lines.append(f"| {r['n']:,} | {r['label']} | | | | {r.get('skipped') or r['error']} | |")
            continue
        chunk = "all (one block)" if r["chunks"] == 1 else f"{r['rows_per_chunk']:,} ({r['chunks']} chunks)"
        extra = r["peak_gib"] - r["base_gib"]
        lines.append(f"| {r['n']:,} | {r['label']} | {chunk} | {r['peak_gib']:.2f} GiB | {extra:.2f} GiB "
                     f"| {r['seconds']:.1f} s | {r['loss']:.6f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 65536], help="global batch sizes N")
    parser.add_argument("--max-gib", type=float, default=12.0, help="address space one setting may add")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="skip settings predicted to run longer")
    parser.add_argument("--child", type=int, nargs=2, metavar=("N", "ROW_CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(*args.child, args.max_gib)))
        return
    done = []
    for n, row_chunk, label in settings(sorted(args.sizes)):
        reason = skip_reason(n, row_chunk, done, args.max_gib, args.max_seconds)
        result = {"n": n, "row_chunk": row_chunk, "skipped": reason} if reason else measure(n, row_chunk, args.max_gib)
        result["label"] = label
        done.append(result)
        print(json.dumps(result), flush=True)
    print(table(done))


if __name__ == "__main__":
    main()
