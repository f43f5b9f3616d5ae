"""GPU training benchmark (issue 13): our step vs sentence-transformers, packed vs padded, MFU, cached-step memory at
large global batches, encode throughput. Writes OUT/gpu_bench.json and OUT/gpu_bench.md and prints the tables.

  bash benchmarks/gpu/run.sh                                           # the GPU machine: all of it, < 8 minutes
  .venv/bin/python benchmarks/gpu/bench.py --smoke --out /tmp/gpu-smoke  # CPU dry run: tiny model, a few steps

Every measurement has a time budget (--budget-s for all of them together; each is skipped, recorded as such, when
too little is left) and a failing one is recorded as an error string; the run itself does not fail. Data, models and
the FLOP formula: benchmarks/gpu/workload.py. What is measured and the targets: benchmarks/gpu/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import sys
import time
import traceback
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.gpu import workload  # noqa: E402

LR, TEMPERATURE = 2e-5, 0.05  # MultipleNegativesRankingLoss's default scale 20 = 1 / 0.05


@dataclass
class Plan:
    models: tuple[str, ...]
    lengths: tuple[int, ...]
    batch: int  # pairs per step in the throughput runs
    warmup: int  # untimed steps first
    seconds: float  # timed seconds per throughput run
    padded_chunk_tokens: int  # padded chunks: padded tokens per forward
    memory_model: str
    memory_len: int
    memory_batches: tuple[int, ...]
    cache_chunk_tokens: int  # cached step: real tokens per chunk
    encode_docs: int
    rows: int
    compile_run: tuple[str, int]


FULL = Plan(("gte-small", "gte-base"), (128, 512), 256, 3, 5.0, 32768, "gte-base", 128, (4096, 16384, 65536), 32768,
            32768, 70000, ("gte-base", 512))
SMOKE = Plan(("tiny",), (32, 64), 8, 1, 0.3, 256, "tiny", 32, (16, 32), 256, 64, 256, ("tiny", 64))


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def measure(results: dict, name: str, budget: Budget, need_s: float, fn) -> None:
    """results[name] = fn(), or {"skipped": ...} when the budget has too little left, or {"error": ...}."""
    if budget.left() < need_s:
        results[name] = {"skipped": f"time budget: {budget.left():.0f} s left, ~{need_s:.0f} s needed"}
        print(f"[bench] {name}: skipped", flush=True)
        return
    started = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as exc:  # recorded, not raised: the other measurements still run
        traceback.print_exc()
        results[name] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
    results[name]["wall_s"] = round(time.perf_counter() - started, 1)
    print(f"[bench] {name}: {json.dumps(results[name])[:300]}", flush=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- setup -----------------------------------------------------------------------------------------------------
class Work:
    """The generated pairs dir, tokenizer and model folders, and the token lengths of every row."""

    def __init__(self, root: Path, plan: Plan, device: str) -> None:
        from benchmarks.train_bench_workers import write_pairs_dir  # the one-source pairs dir writer

        self.root, self.plan, self.device = root, plan, device
        rows, self.q_words, self.d_words = workload.debian_like_rows(plan.rows)
        self.docs = [r["positive"] for r in rows[: plan.encode_docs]]
        self.pairs = write_pairs_dir(rows, root / "pairs") if not (root / "pairs" / "manifest.json").is_file() \
            else root / "pairs"
        tokenizer = workload.write_tokenizer(root / "tokenizer")
        self.models = {m: workload.random_model_folder(m, tokenizer, root / "models" / m)
                       for m in {*plan.models, plan.memory_model, plan.compile_run[0]}}

    def lengths(self, rows: list[int], max_len: int) -> np.ndarray:
        """Token lengths of the queries and positives of `rows` at max_len (each word is one token)."""
        idx = np.asarray(rows)
        return np.minimum(np.concatenate([self.q_words[idx], self.d_words[idx]]) + 2, max_len)

    def overrides(self, model: str, max_len: int, batch: int, *extra: str) -> list[str]:
        return [f"run.dir={self.root / 'runs' / uuid.uuid4().hex[:8]}", f"model.init_from={self.models[model]}",
                f"data.train_dir={self.pairs}", f"data.cache_dir={self.root / 'cache'}",
                f"data.query_max_len={max_len}", f"data.doc_max_len={max_len}", "data.num_negatives=0",
                "data.val_rows=0", f"train.global_batch_size={batch}", "train.checkpoint_every=0",
                "train.eval_every=0", "train.precision=bf16", f"optim.lr={LR}", "optim.warmup_steps=0",
                "optim.schedule=constant", "log.wandb=off", *extra]


def trainer_for(overrides: list[str]):
    from gte_model.core.config import load_config
    from train.config import TrainConfig
    from train.trainer import Trainer

    with contextlib.redirect_stdout(io.StringIO()):  # building prints notices
        return Trainer(load_config(TrainConfig, None, overrides))


def shape_of(gte) -> tuple[int, int, int]:
    cfg = gte.backbone.config
    return workload.encoder_params(gte), cfg.num_hidden_layers, cfg.hidden_size


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ---- measurements ----------------------------------------------------------------------------------------------
def run_ours(work: Work, model: str, max_len: int, packed: bool, compiled: bool = False) -> dict:
    """Ours: Trainer.step on the pairs dir (sampler, Arrow rows, tokenizer, chunks, forward, loss, backward, AdamW),
    InfoNCE at 0.05 without duplicate masking (= MNRL), no cache; packed = one chunk of every text."""
    p = work.plan
    chunks = ([f"train.chunk_size={2 * p.batch}", "train.chunk_tokens=0"] if packed else
              [f"train.chunk_size={2 * p.batch}", f"train.chunk_tokens={p.padded_chunk_tokens}"])
    trainer = trainer_for(work.overrides(model, max_len, p.batch, *chunks, f"train.packed={str(packed).lower()}",
                                         f"train.compile={str(compiled).lower()}", "train.grad_cache=false",
                                         "train.max_steps=1000000", "loss.kind=infonce",
                                         f"loss.temperature={TEMPERATURE}", "loss.mask_duplicates=false"))
    params, layers, hidden = shape_of(trainer.gte)
    warmup = p.warmup + (5 if compiled else 0)  # compiled: the first shapes compile (static, then dynamic)
    stamps, flops, tokens, mismatch, step = [time.perf_counter()], 0.0, 0, 0, 0
    while step <= warmup or stamps[-1] - stamps[warmup] < p.seconds:  # stamps[k + 1]: the end of step k
        stats = trainer.step(step)  # its loss is a float: the step has finished on the device
        stamps.append(time.perf_counter())
        lengths = work.lengths(stats.rows, max_len)
        mismatch += int(lengths.sum()) != stats.tokens  # the FLOP count's token lengths are the trainer's
        if step >= warmup:
            flops += workload.train_flops(lengths, params, layers, hidden)
            tokens += stats.tokens
        step += 1
    trainer.read_ahead.close()  # the next step's read-ahead would keep this trainer (and its GPU memory) alive
    window, timed = stamps[-1] - stamps[warmup], step - warmup
    return {"steps": timed, "seconds": window, "pairs_per_s": timed * p.batch / window,
            "tokens_per_s": tokens / window, "tflops": flops / window / 1e12, "loss": stats.loss,
            "length_mismatch_steps": mismatch, "warmup_s": stamps[warmup] - stamps[0]}


def run_peer(work: Work, model: str, max_len: int) -> dict:
    from accelerate.state import AcceleratorState

    from benchmarks.gpu.peer import run_st
    from benchmarks.train_bench_workers import peer_dataset

    AcceleratorState._reset_state(True)  # the previous Trainer's accelerate state; transformers builds its own
    gte_shape = shape_of(_load(work.models[model]))
    got = run_st(work.models[model], peer_dataset(work.pairs), max_len=max_len, batch=work.plan.batch,
                 warmup=work.plan.warmup, seconds=work.plan.seconds, device=work.device,
                 out_dir=work.root / "runs" / f"st-{uuid.uuid4().hex[:8]}", lr=LR, temperature=TEMPERATURE)
    params, layers, hidden = gte_shape
    flops = 6.0 * params * got["tokens"] + 12.0 * layers * hidden * got["squares"]
    return {"steps": got["steps"], "seconds": got["seconds"], "pairs_per_s": got["pairs_per_s"],
            "tokens_per_s": got["tokens"] / got["seconds"], "tflops": flops / got["seconds"] / 1e12,
            "peer": got["peer"]}


def _load(folder: Path):
    from gte_model import load_model

    return load_model(folder)


def run_memory(work: Work, batch: int) -> dict:
    """One cached step (gte loss, packed, bf16) at this global batch: peak device memory and its time."""
    from train.config import LossConfig

    p = work.plan
    extra = ["loss.row_chunk=0"] if "row_chunk" in LossConfig.__dataclass_fields__ else []  # 0 = auto
    trainer = trainer_for(work.overrides(p.memory_model, p.memory_len, batch, "train.grad_cache=true",
                                         "train.packed=true", f"train.chunk_size={min(2 * batch, 16384)}",
                                         f"train.chunk_tokens={p.cache_chunk_tokens}", "train.max_steps=1", *extra))
    if torch.cuda.is_available():
        sync()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    stats = trainer.step(0)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {"global_batch": batch, "peak_gib": peak, "seconds": seconds, "pairs_per_s": batch / seconds,
            "tokens": stats.tokens, "loss": stats.loss, "loss_settings": extra or ["loss.row_chunk: not in config"]}


def run_encode(work: Work) -> dict:
    model = work.plan.memory_model
    gte = _load(work.models[model]).to(work.device)
    gte.encode(work.docs[:256], batch_size=256, bf16=True)  # warm-up
    sync()
    started = time.perf_counter()
    gte.encode(work.docs, batch_size=256, bf16=True, max_seq_len=512)
    sync()
    seconds = time.perf_counter() - started
    return {"model": model, "docs": len(work.docs), "seconds": seconds, "docs_per_s": len(work.docs) / seconds}


# ---- the run ---------------------------------------------------------------------------------------------------
def environment(device: str, peak_override: float) -> dict:
    import sentence_transformers
    import transformers

    from gte_model.packed import attention_backend

    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return {"device": name, "torch": torch.__version__, "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__, "cuda": torch.version.cuda,
            "peak_bf16_tflops": workload.peak_tflops(name, peak_override) if device == "cuda" else None,
            "attention_train": attention_backend(device, torch.bfloat16, 0.1, 64),
            "attention_eval": attention_backend(device, torch.bfloat16, 0.0, 64)}


def run_all(work: Work, budget: Budget) -> dict:
    p, results = work.plan, {}
    per_run = p.seconds + 12  # warm-up and building, roughly
    for model in p.models:
        for max_len in p.lengths:
            for packed in (True, False):
                name = f"ours-{'packed' if packed else 'padded'}/{model}/{max_len}"
                measure(results, name, budget, per_run, lambda: run_ours(work, model, max_len, packed))
    for model in p.models:  # after all of ours: transformers' Trainer keeps accelerate state of its own
        for max_len in p.lengths:
            measure(results, f"st/{model}/{max_len}", budget, per_run + 8, lambda: run_peer(work, model, max_len))
    for batch in p.memory_batches:
        measure(results, f"cached-memory/{batch}", budget, 5 + batch / 4000,
                lambda: run_memory(work, batch))
    measure(results, "encode", budget, 10, lambda: run_encode(work))
    model, max_len = p.compile_run
    measure(results, f"ours-packed-compiled/{model}/{max_len}", budget, 90,
            lambda: run_ours(work, model, max_len, True, compiled=True))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-bench-out"), help="folder for the json and md")
    ap.add_argument("--work", default="/tmp/gte-gpu-bench", help="generated data, models, runs")
    ap.add_argument("--smoke", action="store_true", help="CPU dry run: tiny model, tiny batch, a few steps")
    ap.add_argument("--budget-s", type=float, default=330.0, help="seconds for all measurements together")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="the device's dense bf16 peak if not in the table")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.smoke:
        print("bench.py: no CUDA device; use --smoke for the CPU dry run", file=sys.stderr)
        return 2
    plan = SMOKE if args.smoke else FULL
    if args.smoke:
        import train.trainer

        train.trainer.COMPILE_BACKEND = "aot_eager"  # no C++ build on the CPU dry run
    budget, started = Budget(args.budget_s), time.perf_counter()
    work = Work(Path(args.work) / ("smoke" if args.smoke else "full"), plan, device)
    report = {"environment": environment(device, args.peak_tflops), "plan": asdict(plan), "smoke": args.smoke,
              "setup_s": round(time.perf_counter() - started, 1)}
    report["results"] = run_all(work, budget)
    report["total_s"] = round(time.perf_counter() - started, 1)
    from benchmarks.gpu.report import write_report

    print(write_report(report, Path(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
