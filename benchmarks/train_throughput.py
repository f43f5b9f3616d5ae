"""Training-step throughput (not a test): our loop vs sentence-transformers on the packaged all-MiniLM-L6-v2.

Both train the same real pairs (Debian package descriptions, short -> long, deduplicated on the long text) at batch
32 and max length 128 for queries and documents, with the same loss (in-batch InfoNCE at temperature 0.05 ==
MultipleNegativesRankingLoss at scale 20, no hard negatives, no duplicate masking), AdamW lr 2e-5, weight decay
0.01, clipping at 1.0, in fp32 and in bf16 autocast:

  ours: train.trainer.Trainer(TrainConfig) and Trainer.step: pairs dir -> sampler -> texts -> tokenisation ->
        length-sorted chunks -> forward -> loss -> backward -> clip -> AdamW -> schedule; the product default
        (train.packed=true: the unpadded forward, one chunk of --packed-chunk-size texts)
  ours-padded: the same with train.packed=false (padded chunks of --chunk-size texts / --chunk-tokens tokens)
  peer: SentenceTransformerTrainer + MultipleNegativesRankingLoss (use_cpu, no eval, no saving, report_to none,
        dataloader_drop_last), fed a datasets.Dataset (anchor, positive) with the same rows, at its best documented
        CPU settings (benchmarks/peer_settings.py: sdpa attention, bf16 autocast in the bf16 runs, fused AdamW)

The pairs set holds exactly (warmup + steps) x batch rows, so both see every row once, in their own order. Each
configuration runs in its own process (peak RSS is its own ru_maxrss); ours and the peer alternate, the order
flipping between rounds and precisions, so machine noise hits both alike. Reported: pairs/s, tokens/s
(non-padding tokens of queries + documents), peak RSS, and ratios ours/peer (means over rounds).

Then the cached step (train.grad_cache=true) at global batch 256, 1024, 4096: peak RSS (should stay flat: memory is
set by the chunk, not the batch) and pairs/s. From --cache-probe-from on, only peak RSS: the step stops after phase
1 (all chunks without grad), phase 2 (the loss) and --probe-chunks re-forwards with backward. glibc keeps freed
activation blocks in its heap; MALLOC_MMAP_THRESHOLD_=65536 in the environment shows the live peak instead.

  .venv/bin/python benchmarks/train_throughput.py                        # full: 2 rounds x {fp32, bf16} + cache
  .venv/bin/python benchmarks/train_throughput.py --rounds 1 --steps 5 --warmup 1 --cache-batches 256   # quick
  .venv/bin/python benchmarks/train_throughput.py --outside 8,40     # whole processes: `gte train` vs the peer
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from train_bench_workers import WORKERS, debian_rows, write_pairs_dir  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed ones")
    p.add_argument("--batch", type=int, default=32, help="pairs per step (both systems)")
    p.add_argument("--max-len", type=int, default=128, help="max tokens of queries and of documents")
    p.add_argument("--systems", default="ours,peer,ours-padded", help="which to run, in the first round's order")
    p.add_argument("--packed-chunk-size", type=int, default=64, help="ours: texts per packed forward pass")
    p.add_argument("--chunk-size", type=int, default=32, help="ours-padded: texts per forward (train.chunk_size)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of ours/peer per precision")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--chunk-tokens", type=int, default=2048, help="ours-padded: padded tokens per forward pass")
    p.add_argument("--cache-batches", default="256,1024,4096", help="global batches of the cached step ('' = skip)")
    p.add_argument("--cache-chunk", type=int, default=64, help="cached step: train.chunk_size")
    p.add_argument("--cache-chunk-tokens", type=int, default=2048, help="cached step: train.chunk_tokens")
    p.add_argument("--cache-steps", type=int, default=1, help="cached step: timed steps per batch (no warm-up)")
    p.add_argument("--cache-precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--cache-probe-from", type=int, default=4096,
                   help="cached step: from this global batch on, measure peak RSS only (the step stops after "
                        "--probe-chunks phase-3 chunks; a full step there takes too long on 2 cores)")
    p.add_argument("--probe-chunks", type=int, default=2)
    p.add_argument("--work-dir", default="", help="pairs dirs, run dirs, results.json (default: a temp dir)")
    p.add_argument("--report", default="", help="only print the tables from a log of this script (its JSON lines)")
    p.add_argument("--outside", default="",
                   help="N1,N2: time whole processes instead (ours: `gte train`, the peer: its trainer), each "
                        "system N1 and N2 steps; pairs/s from the difference (benchmarks/outside_runs.py)")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)  # internal: JSON spec of one run
    return p.parse_args(argv)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"python {platform.python_version()}")


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def prepare(work: Path, args: argparse.Namespace, cache_batches: list[int]) -> tuple[Path, Path | None]:
    """The throughput pairs dir ((warmup + steps) x batch rows) and the cache pairs dir, from disjoint rows."""
    rows = debian_rows(seed=0)
    n_tp = (args.warmup + args.steps) * args.batch
    n_cache = max(cache_batches, default=0) * args.cache_steps
    if n_tp + n_cache > len(rows):
        raise SystemExit(f"need {n_tp} + {n_cache} Debian pairs, have {len(rows)}: lower --steps/--cache-steps")
    tp = write_pairs_dir(rows[:n_tp], work / "pairs-throughput")
    cache = write_pairs_dir(rows[n_tp : n_tp + n_cache], work / "pairs-cache") if n_cache else None
    return tp, cache


def run_child(spec: dict) -> dict:
    """One run in a fresh interpreter; its result dict (with the spec's labels)."""
    out = Path(spec["run_dir"]) / "result.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"run {spec['label']} failed (exit {proc.returncode})")
    result = json.loads(out.read_text())
    result.update(label=spec["label"], wall_s=time.perf_counter() - started)
    print(json.dumps(result), flush=True)
    return result


def worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    Path(spec["run_dir"]).mkdir(parents=True, exist_ok=True)
    result = WORKERS[spec["system"]](spec)
    result.update({k: spec[k] for k in ("system", "precision", "batch", "round", "chunk_size") if k in spec})
    (Path(spec["run_dir"]) / "result.json").write_text(json.dumps(result))


def throughput_runs(args: argparse.Namespace, work: Path, pairs: Path) -> list[dict]:
    results = []
    precisions = [p for p in args.precisions.split(",") if p]
    systems = [s for s in args.systems.split(",") if s]
    for r in range(args.rounds):
        for i, precision in enumerate(precisions):
            order = systems if (r + i) % 2 == 0 else systems[::-1]
            for system in order:
                label = f"{system}-{precision}-r{r}"
                packed = system == "ours"
                spec = {"system": system, "precision": precision, "round": r,
                        "label": label,
                        "run_dir": str(work / "runs" / label), "pairs_dir": str(pairs),
                        "cache_dir": str(work / "arrow-cache"), "batch": args.batch, "max_len": args.max_len,
                        "packed": packed, "chunk_size": args.packed_chunk_size if packed else args.chunk_size,
                        "chunk_tokens": 0 if packed else args.chunk_tokens, "warmup": args.warmup,
                        "steps": args.steps}
                results.append(run_child(spec))
    return results


def cache_runs(args: argparse.Namespace, work: Path, pairs: Path, batches: list[int]) -> list[dict]:
    results = []
    for batch in batches:
        label = f"cached-{args.cache_precision}-b{batch}"
        spec = {"system": "ours", "precision": args.cache_precision, "label": label, "grad_cache": True,
                "run_dir": str(work / "runs" / label), "pairs_dir": str(pairs), "cache_dir": str(work / "arrow-cache"),
                "batch": batch, "max_len": args.max_len, "chunk_size": args.cache_chunk, "packed": True,
                "chunk_tokens": args.cache_chunk_tokens,
                "warmup": 0, "steps": args.cache_steps}
        if batch >= args.cache_probe_from:
            spec.update(probe_chunks=args.probe_chunks, label=label + "-probe")
        results.append(run_child(spec))
    return results


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def throughput_table(results: list[dict]) -> str:
    lines = ["| precision | system | pairs/s | tokens/s | tokens/step | peak RSS MiB | runs (pairs/s) |",
             "|---|---|---:|---:|---:|---:|---|"]
    ratios = ["", "| precision | system | pairs/s vs peer | tokens/s vs peer | peak RSS vs peer |",
              "|---|---|---:|---:|---:|"]
    for precision in dict.fromkeys(r["precision"] for r in results):
        by = {s: [r for r in results if r["precision"] == precision and r["system"] == s]
              for s in ("ours", "ours-padded", "peer")}
        for system, rows in by.items():
            if not rows:
                continue
            runs = ", ".join(f"{r['pairs_per_s']:.2f}" for r in rows)
            lines.append(f"| {precision} | {system} | {_mean(rows, 'pairs_per_s'):.2f} | "
                         f"{_mean(rows, 'tokens_per_s'):.0f} | {_mean(rows, 'tokens_per_step'):.0f} | "
                         f"{_mean(rows, 'peak_rss_mb'):.0f} | {runs} |")
        for system in ("ours", "ours-padded"):
            if by[system] and by["peer"]:
                ratio = {k: _mean(by[system], k) / _mean(by["peer"], k)
                         for k in ("pairs_per_s", "tokens_per_s", "peak_rss_mb")}
                ratios.append(f"| {precision} | {system} | {ratio['pairs_per_s']:.2f}x | "
                              f"{ratio['tokens_per_s']:.2f}x | {ratio['peak_rss_mb']:.2f}x |")
    return "\n".join(lines + ratios)


def cache_table(results: list[dict]) -> str:
    lines = ["| global batch | precision | chunk | pairs/s | tokens/s | peak RSS MiB | RSS before step 0 MiB |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in results:
        probe = "probe_chunks" in r
        speed = "(RSS probe)" if probe else f"{r['pairs_per_s']:.2f}"
        tokens = "" if probe else f"{r['tokens_per_s']:.0f}"
        lines.append(f"| {r['batch']} | {r['precision']} | {r.get('chunk_size', '')} | {speed} | {tokens} | "
                     f"{r['peak_rss_mb']:.0f} | {r['rss_before_train_mb']:.0f} |")
    return "\n".join(lines)


def report(log: Path) -> None:
    """The tables of the runs a (possibly interrupted) log printed, one JSON object per line."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    if any(r.get("outside") for r in rows):
        from outside_runs import outside_table

        print(outside_table([r for r in rows if r.get("outside")]))
        rows = [r for r in rows if not r.get("outside")]
    throughput = [r for r in rows if not r["label"].startswith("cached")]
    cached = [r for r in rows if r["label"].startswith("cached")]
    if throughput:
        print(throughput_table(throughput))
    if cached:
        print("\n" + cache_table(cached))


def outside(args: argparse.Namespace, work: Path) -> None:
    from outside_runs import outside_runs, outside_table

    lengths = tuple(int(n) for n in args.outside.split(","))
    if len(lengths) != 2 or not 0 < lengths[0] < lengths[1]:
        raise SystemExit(f"--outside takes two step counts N1,N2 with 0 < N1 < N2, not {args.outside!r}")
    rows = debian_rows(seed=0)[: lengths[1] * args.batch]
    pairs = write_pairs_dir(rows, work / "pairs-outside")
    results = outside_runs(args, work, pairs, lengths)
    (work / "results-outside.json").write_text(json.dumps(results, indent=2))
    print(f"\nload average at end: {load_avg()}")
    print(f"\nwhole processes, {lengths[0]} and {lengths[1]} steps, batch {args.batch}, max length {args.max_len}, "
          f"{args.rounds} rounds; ours: `gte train`, packed, chunk {args.packed_chunk_size}\n")
    print(outside_table(results))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return
    if args.report:
        report(Path(args.report))
        return
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="train-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    batches = [int(b) for b in args.cache_batches.split(",") if b]
    print(f"machine: {machine()}")
    print(f"load average at start: {load_avg()}   work dir: {work}", flush=True)
    if args.outside:
        outside(args, work)
        return
    pairs, cache_pairs = prepare(work, args, batches)
    results = throughput_runs(args, work, pairs)
    cached = cache_runs(args, work, cache_pairs, batches) if cache_pairs else []
    (work / "results.json").write_text(json.dumps({"throughput": results, "cached": cached}, indent=2))
    print(f"\nload average at end: {load_avg()}")
    print(f"\nbatch {args.batch}, max length {args.max_len}, {args.warmup} warm-up + {args.steps} timed steps, "
          f"{args.rounds} rounds; ours: packed, chunk {args.packed_chunk_size}; ours-padded: chunk {args.chunk_size}, "
          f"{args.chunk_tokens} tokens\n")
    print(throughput_table(results))
    if cached:
        print(f"\ncached step (train.grad_cache=true, packed, chunk {args.cache_chunk} texts / "
              f"{args.cache_chunk_tokens} tokens, {args.cache_steps} timed step(s), "
              f"no warm-up; batches >= {args.cache_probe_from}: peak RSS of a step cut after {args.probe_chunks} "
              "phase-3 chunks)\n")
        print(cache_table(cached))


if __name__ == "__main__":
    main()
