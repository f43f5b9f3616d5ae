"""Whole-process training throughput for benchmarks/train_throughput.py --outside (issue 28).

Each system trains a short and a long run (--outside N1,N2 optimizer steps), every run a fresh process timed from
outside: ours is the `gte train` command itself (`python -m train key=value ...`: the run loop with its memory
trims, metrics, records, the final checkpoint and export), the peer is sentence-transformers' trainer in a process
of its own. pairs/s = batch x (N2 - N1) / (wall(N2) - wall(N1)): start-up, imports, model loading, the data cache
build, the final save and teardown are in both runs and cancel, so what is left is the steady step as a user's
process runs it, loop included. Systems alternate, the order flipping with the round and the precision.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from train_bench_workers import ours_overrides

SCRIPT = Path(__file__).resolve().parent / "train_throughput.py"


def _spec(system: str, precision: str, steps: int, rnd: int, work: Path, pairs: Path, args) -> dict:
    label = f"{system}-{precision}-{steps}steps-r{rnd}"
    run_dir = work / "outside" / label
    return {"system": system, "precision": precision, "round": rnd, "label": label, "run_dir": str(run_dir),
            "pairs_dir": str(pairs), "cache_dir": str(run_dir.with_name(label + "-cache")), "batch": args.batch,
            "max_len": args.max_len, "packed": True, "chunk_size": args.packed_chunk_size, "chunk_tokens": 0,
            "warmup": 0, "steps": steps}


def _command(spec: dict) -> list[str]:
    if spec["system"] == "ours":
        return [sys.executable, "-m", "train", *ours_overrides(spec)]
    return [sys.executable, str(SCRIPT), "--worker", json.dumps(spec)]


def timed_run(spec: dict) -> dict:
    """One whole process; its wall time from before the interpreter starts to after it has exited."""
    started = time.perf_counter()
    proc = subprocess.run(_command(spec), capture_output=True, text=True, cwd=SCRIPT.parents[1])
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"run {spec['label']} failed (exit {proc.returncode})")
    row = {k: spec[k] for k in ("system", "precision", "label", "batch", "steps", "round")}
    row.update(wall_s=wall, outside=True)
    print(json.dumps(row), flush=True)
    return row


def outside_runs(args, work: Path, pairs: Path, lengths: tuple[int, int]) -> list[dict]:
    rows = []
    precisions = [p for p in args.precisions.split(",") if p]
    for r in range(args.rounds):
        for i, precision in enumerate(precisions):
            order = ("ours", "peer") if (r + i) % 2 == 0 else ("peer", "ours")
            for system in order:
                rows += [timed_run(_spec(system, precision, steps, r, work, pairs, args)) for steps in lengths]
    return rows


def outside_table(rows: list[dict]) -> str:
    """pairs/s per (precision, system) from each round's short/long pair, their mean, and ours / peer."""
    lines = ["| precision | system | pairs/s (per round) | pairs/s (mean) | ours / peer |", "|---|---|---|---:|---:|"]
    for precision in dict.fromkeys(r["precision"] for r in rows):
        rates = {s: _rates([r for r in rows if r["precision"] == precision and r["system"] == s])
                 for s in ("ours", "peer")}
        means = {s: sum(v) / len(v) for s, v in rates.items() if v}
        ratio = f"{means['ours'] / means['peer']:.2f}x" if len(means) == 2 else ""
        for system, mean in means.items():
            per = " / ".join(f"{x:.1f}" for x in rates[system])
            lines.append(f"| {precision} | {system} | {per} | {mean:.1f} | {ratio if system == 'ours' else ''} |")
    return "\n".join(lines)


def _rates(runs: list[dict]) -> list[float]:
    """One pairs/s per round: batch x (long - short steps) / (long - short wall seconds)."""
    rates = []
    for rnd in sorted({r["round"] for r in runs}):
        short, long = sorted((r for r in runs if r["round"] == rnd), key=lambda r: r["steps"])
        rates.append(long["batch"] * (long["steps"] - short["steps"]) / (long["wall_s"] - short["wall_s"]))
    return rates
