"""LoRA vs full fine-tuning of the packaged all-MiniLM-L6-v2 on the same pairs, this machine (not a test).

Each mode trains one source of a pairs dir with the product's own Trainer (packed forward, InfoNCE at 0.05, batch
32, constant lr after 5 warm-up steps) for the same wall time, then encodes that source's held-out BEIR folder
(<pairs>/beir/<source>, written by `gte prep`) and reports nDCG@10 (train.eval.retrieval, ir-measures). Reported per
mode: trainable parameters, AdamW state bytes (every tensor in optimizer.state), steps and pairs/s in the window
(the first 2 steps untimed), and nDCG@10 before (base) and after. The modes alternate order per round, so a busy
machine hits both alike; each mode starts from the same packaged weights and sees the same batches.

  .venv/bin/python benchmarks/lora.py runs/quickstart/data/pairs --source debian --seconds 120
  .venv/bin/python benchmarks/lora.py PAIRS --seconds 20 --eval-queries 200      # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gte_model.core.config import load_config  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.eval.retrieval import evaluate_beir  # noqa: E402
from train.trainer import Trainer  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pairs", help="a pairs dir from `gte prep` with beir/<source>")
    p.add_argument("--source", default="debian")
    p.add_argument("--seconds", type=float, default=120.0, help="training wall time per mode and round")
    p.add_argument("--rounds", type=int, default=1, help="rounds; the mode order flips every round")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-len", type=int, default=64, help="max tokens of queries and documents")
    p.add_argument("--r", type=int, default=16, help="LoRA rank (model.lora.r)")
    p.add_argument("--alpha", type=float, default=32.0, help="model.lora.alpha")
    p.add_argument("--lr-full", type=float, default=2e-5)
    p.add_argument("--lr-lora", type=float, default=2e-4, help="adapters start at zero and want ~10x the lr")
    p.add_argument("--eval-queries", type=int, default=0, help="held-out queries scored (0 = all)")
    p.add_argument("--work-dir", default="")
    return p.parse_args(argv)


def config(args: argparse.Namespace, mode: str, run_dir: Path) -> TrainConfig:
    overrides = [
        f"run.dir={run_dir}", "model.init_from=all-MiniLM-L6-v2", f"data.train_dir={args.pairs}",
        f"data.sources=[{args.source}]", f"data.cache_dir={run_dir.parent / 'cache'}", "data.num_negatives=0",
        "data.val_rows=0", f"data.query_max_len={args.max_len}", f"data.doc_max_len={args.max_len}",
        f"train.global_batch_size={args.batch}", f"train.chunk_size={2 * args.batch}", "train.max_steps=100000",
        "train.checkpoint_every=0", "train.eval_every=0", "optim.warmup_steps=5", "optim.schedule=constant",
        "loss.kind=infonce", "loss.temperature=0.05", "log.wandb=off",
        f"optim.lr={args.lr_lora if mode == 'lora' else args.lr_full}",
    ]
    if mode == "lora":
        overrides += [f"model.lora.r={args.r}", f"model.lora.alpha={args.alpha}"]
    return load_config(TrainConfig, None, overrides)


def beir_subset(args: argparse.Namespace, out: Path) -> Path:
    """<pairs>/beir/<source>, its first --eval-queries queries (with every document) when capped."""
    src = Path(args.pairs) / "beir" / args.source
    if not args.eval_queries:
        return src
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    (out / "corpus.jsonl").write_text((src / "corpus.jsonl").read_text())
    (out / "queries.jsonl").write_text((src / "queries.jsonl").read_text())
    lines = (src / "qrels" / "test.tsv").read_text().splitlines()
    (out / "qrels" / "test.tsv").write_text("\n".join(lines[: args.eval_queries + 1]) + "\n")
    return out


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of every tensor AdamW keeps (exp_avg, exp_avg_sq, step)."""
    tensors = [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in tensors)


def run_mode(args: argparse.Namespace, mode: str, work: Path, beir: Path) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = Trainer(config(args, mode, work / f"run-{mode}"))
    trainable = sum(p.numel() for p in trainer.gte.parameters() if p.requires_grad)
    for step in range(2):  # untimed: first-call costs (allocator, oneDNN kernels, Arrow cache)
        trainer.step(step)
    step, started = 2, time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        trainer.step(step)
        step += 1
    seconds = time.perf_counter() - started
    trainer.read_ahead.close()
    ndcg = evaluate_beir(trainer.gte, beir)["ndcg@10"]
    return {"mode": mode, "trainable_params": trainable, "optimizer_state_bytes": optimizer_state_bytes(
        trainer.optimizer), "steps": step, "pairs_per_s": (step - 2) * args.batch / seconds, "ndcg@10": ndcg}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="lora-bench-"))
    beir = beir_subset(args, work / "beir")
    from gte_model import load_model

    base = evaluate_beir(load_model("all-MiniLM-L6-v2", max_seq_len=args.max_len), beir)  # as the trained ones
    print(json.dumps({"mode": "base", "ndcg@10": base["ndcg@10"], "queries": base["queries"],
                      "documents": base["documents"], "load_avg": os.getloadavg()}), flush=True)
    for r in range(args.rounds):
        for mode in ("full", "lora") if r % 2 == 0 else ("lora", "full"):
            result = run_mode(args, mode, work / f"round{r}", beir)
            print(json.dumps({**result, "round": r, "load_avg": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    main()
