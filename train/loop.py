"""The one training loop for both stages: `gte train CONFIG [key=value ...]` (or `python -m train CONFIG ...`).

  CPU, seconds:  .venv/bin/python -m tests.train.tinydata runs/tiny-pairs && gte train configs/tiny.yaml
  one GPU:       gte train configs/pretrain.yaml run.dir=runs/stage1
  several GPUs:  accelerate launch --config_file configs/accelerate/ddp.yaml -m train configs/pretrain.yaml
  SLURM:         sbatch scripts/slurm_multinode.sbatch configs/pretrain.yaml

A stage is a config, not a code path: stage 2 differs in data (mined negatives), batch, lr and `model.init_from`.
Per step: the sampler names one source and the global batch's rows -> this process's rows -> texts -> token ids
(queries and documents with their own max length) -> length-sorted chunks (unpadded by default) -> the step
function (plain or cached, chosen once) with a loss that gathers every column across processes -> clip, AdamW,
schedule. accelerate owns devices, DDP, DeepSpeed and autocast. Re-running the same command resumes from the
newest checkpoint; a finished run (DONE) returns its export at once.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gte_model import Packed, load_model, supports_packing
from gte_model.configio import ConfigError, config_to_dict, dump_config, load_config, save_config
from train.checkpoint import clean_partial, latest_checkpoint, load_checkpoint, save_checkpoint
from train.config import TrainConfig
from train.data import Batch, DataError, PairsData
from train.distributed import all_reduce_mean, gather_nograd, gather_with_grad, local_rows, world
from train.grad_cache import cached_step
from train.loss import contrastive_loss, text_hash
from train.metrics import open_logger
from train.sampler import SourceBatchSampler
from train.step import make_chunks, plain_step
from train.tokens import RoleTokenizer

DONE_FILE = "DONE"
PROBE_FILE = "export_probe.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gte train", description="Train one stage (see configs/*.yaml).")
    parser.add_argument("config", help="YAML config, e.g. configs/tiny.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=100 optim.lr=1e-4")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        fit(load_config(TrainConfig, args.config, args.overrides))
    except (ConfigError, DataError) as exc:
        print(f"gte train: {exc}", file=sys.stderr)
        return 2
    return 0


@dataclass
class Run:
    """Everything one step needs, built once."""

    cfg: TrainConfig
    accelerator: object
    model: torch.nn.Module  # prepared (DDP / DeepSpeed engine / plain)
    gte: torch.nn.Module  # the GTEModel inside it: tokenizer, prompts, export
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    data: PairsData
    sampler: SourceBatchSampler
    step_fn: object  # (encode, chunks, loss_fn) -> detached loss
    update: object  # () -> grad norm: clip, optimizer step, schedule, zero grads
    packed: bool  # chunks are unpadded gte_model.Packed batches (train.packed and a BertModel backbone)
    tokenize: RoleTokenizer  # (texts, role) -> token ids


def fit(cfg: TrainConfig) -> Path:
    """Train one stage to cfg.train.max_steps (resuming from the newest checkpoint) and export; returns the export
    folder. A run dir that finished before is left alone."""
    run_dir = Path(cfg.run.dir)
    if (run_dir / DONE_FILE).is_file() and (run_dir / "export").is_dir():
        print(f"gte train: {run_dir} finished already ({run_dir / DONE_FILE}); export: {run_dir / 'export'}")
        return run_dir / "export"
    run = _build(cfg)
    acc, t = run.accelerator, cfg.train
    start, offset = _resume(run)
    cfg_dict = config_to_dict(cfg)
    logger = open_logger(acc.is_main_process, run_dir, cfg_dict, offset, cfg.log.wandb, cfg.log.project, cfg.run.name)
    bar = tqdm(total=t.max_steps, initial=start, disable=not acc.is_main_process, desc="train", unit="step")
    meter = _Meter()
    for step in range(start, t.max_steps):
        meter.add(_train_step(run, step))
        done = step + 1  # steps completed = the next step's data position
        if done % t.log_every == 0 or done == t.max_steps:
            record = meter.flush(run, done)
            logger.log(record)
            bar.set_postfix(
                loss=f"{record['loss']:.4f}",
                pairs_s=f"{record['pairs_per_s']:.0f}",
                tok_s=f"{record['tokens_per_s']:.0f}",
            )
        if cfg.data.val_rows and t.eval_every and done % t.eval_every == 0 and done < t.max_steps:
            logger.log(_evaluate(run, done))
        if t.checkpoint_every and done % t.checkpoint_every == 0 and done < t.max_steps:
            save_checkpoint(acc, run_dir, done, {"metrics_offset": logger.offset()}, t.keep_checkpoints)
            logger.plot()
        bar.update(1)
    bar.close()
    if cfg.data.val_rows:
        logger.log(_evaluate(run, t.max_steps))
    logger.plot()
    export = _export(run, cfg_dict)
    logger.close()
    return export


# ---- building -------------------------------------------------------------------------------------------------
def _build(cfg: TrainConfig) -> Run:
    from accelerate.utils import set_seed

    acc = _make_accelerator(cfg)
    set_seed(cfg.train.seed)  # before the model: a preset's random init depends on it
    run_dir = Path(cfg.run.dir)
    if acc.is_main_process:
        print(dump_config(cfg), flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        clean_partial(run_dir)
    gte, d = _build_model(cfg), cfg.data
    with acc.main_process_first():  # the first process builds the Arrow cache, the others reuse it
        data = PairsData(
            cfg.data.train_dir,
            cfg.data.sources or None,
            cfg.data.cache_dir or run_dir / "cache",
            cfg.data.num_negatives,
            heldout=cfg.data.val_rows > 0,
        )
        tokenize = RoleTokenizer(gte.tokenizer, d.query_prompt, d.doc_prompt, d.query_max_len, d.doc_max_len)
        if d.pretokenize:
            data.pretokenize(tokenize, tokenize.key(), num_proc=min(4, os.cpu_count() or 1))
    sampler = SourceBatchSampler(data.train_sizes(), cfg.train.global_batch_size, cfg.sampler.alpha, cfg.train.seed)
    optimizer, scheduler = _build_optimizer(gte, cfg)
    model, optimizer = acc.prepare(gte, optimizer)
    # Not prepared: accelerate would step it once per process; our schedule counts global steps.
    acc.register_for_checkpointing(scheduler)
    backward, update, no_sync = _make_update(acc, model, optimizer, scheduler, cfg.optim.max_grad_norm)
    if cfg.train.grad_cache:
        step_fn = functools.partial(cached_step, backward=backward, autocast=acc.autocast, no_sync=no_sync)
    else:
        step_fn = functools.partial(plain_step, backward=backward, autocast=acc.autocast)
    packed = cfg.train.packed and supports_packing(gte.backbone)
    if cfg.train.packed and not packed and acc.is_main_process:
        print(
            f"gte train: train.packed=true needs a BertModel backbone, this is {type(gte.backbone).__name__}; "
            "using padded chunks (set train.packed=false to silence this)",
            flush=True,
        )
    return Run(cfg, acc, model, gte, optimizer, scheduler, data, sampler, step_fn, update, packed, tokenize)


def _make_accelerator(cfg: TrainConfig):
    """The Accelerator, with the launch-dependent rules re-checked against what it actually got."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    # One process may fit several stages (gte run); accelerate keeps the first one's precision in a process-wide
    # singleton and refuses another. The process group (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    acc = Accelerator(mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[cfg.train.precision])
    deepspeed = acc.distributed_type == DistributedType.DEEPSPEED
    stage = acc.state.deepspeed_plugin.zero_stage if deepspeed else 0
    errors = cfg.validate(world_size=acc.num_processes, zero_stage=stage)
    if errors:
        raise ConfigError("invalid config for this launch:\n  " + "\n  ".join(errors))
    if deepspeed:  # no dataloader goes through prepare(), so DeepSpeed's batch fields are filled here
        ds = acc.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = cfg.train.global_batch_size // acc.num_processes
        ds["train_batch_size"] = cfg.train.global_batch_size
        ds["gradient_accumulation_steps"] = 1
        ds["gradient_clipping"] = cfg.optim.max_grad_norm
    return acc


def _build_model(cfg: TrainConfig):
    m, d = cfg.model, cfg.data
    gte = load_model(
        m.init_from,
        pooling=m.pooling,
        normalize=m.normalize,
        max_seq_len=max(d.query_max_len, d.doc_max_len),
        tokenizer_from=m.tokenizer_from or None,
    )
    # The config is the truth for prompts: what training prepends is what the export tells clients to prepend.
    gte.prompts = {k: v for k, v in (("query", d.query_prompt), ("document", d.doc_prompt)) if v}
    if cfg.train.grad_checkpointing:
        b = gte.backbone  # transformers 5 renamed it; 4.x has only the old name
        enable = getattr(b, "activation_checkpointing_enable", None) or b.gradient_checkpointing_enable
        enable({"use_reentrant": False})
    return gte.train()  # from_pretrained leaves a model in eval mode: dropout off


def _build_optimizer(gte, cfg: TrainConfig):
    o = cfg.optim
    named = [(n, p) for n, p in gte.named_parameters() if p.requires_grad]
    no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n]
    decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n)]
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for all tensors instead of a Python loop over ~100 of them (MiniLM on 2 CPU cores:
    # 1651 ms -> 140 ms per step, benchmarks/README.md). DeepSpeed wraps the optimizer, so keep its plain path.
    fused = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true"
    optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=fused)
    factor = functools.partial(lr_factor, warmup=o.warmup_steps, total=cfg.train.max_steps, schedule=o.schedule)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def lr_factor(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of optim.lr for the step after `step` completed ones: linear warmup, then decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


def _make_update(acc, model, optimizer, scheduler, max_grad_norm: float):
    """(backward, update, no_sync) for this backend; update() clips, steps, schedules, zeroes and returns the norm.

    Under DeepSpeed, accelerator.backward also steps the optimizer, which the cached step's per-chunk backward must
    not do: the engine's own backward is used, and no_sync marks chunks but the last as gradient-accumulation
    micro-steps (the engine's no_sync() drops their gradients under ZeRO-1: measured). The engine then steps once,
    clipping by the gradient_clipping set in _make_accelerator."""
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.DEEPSPEED:

        @contextlib.contextmanager
        def ds_no_sync():
            model.set_gradient_accumulation_boundary(False)
            try:
                yield
            finally:
                model.set_gradient_accumulation_boundary(True)

        def ds_update():
            model.step()  # clip, optimizer step, zero grads
            scheduler.step()
            return model.get_global_grad_norm()

        return model.backward, ds_update, ds_no_sync

    def update():
        norm = acc.clip_grad_norm_(model.parameters(), max_grad_norm) if max_grad_norm > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    return acc.backward, update, lambda: acc.no_sync(model)


def _resume(run: Run) -> tuple[int, int]:
    """(first step to run, metrics.jsonl byte offset): from the newest complete checkpoint, else (0, 0)."""
    path = latest_checkpoint(run.cfg.run.dir)
    if path is None:
        return 0, 0
    state = load_checkpoint(run.accelerator, path)
    if run.accelerator.is_main_process:
        print(f"gte train: resuming from {path} (step {state['step']})", flush=True)
    return int(state["step"]), int(state.get("metrics_offset", 0))


# ---- one step -------------------------------------------------------------------------------------------------
def _train_step(run: Run, step: int) -> dict:
    cfg = run.cfg
    rank, size = world()
    started = time.perf_counter()
    source, rows = run.sampler.batch_at(step)
    batch = run.data.train_batch(source, run.sampler.local(rows, rank, size), cfg.train.seed, step)
    ids = _token_ids(run, batch)
    chunks, order = _chunks(run, ids)
    loss_fn = _make_loss_fn(run, batch, order)
    lr = run.optimizer.param_groups[0]["lr"]
    loss = run.step_fn(_encoder(run), chunks, loss_fn)
    grad_norm = run.update()
    return {
        "loss": loss,
        "lr": lr,
        "grad_norm": grad_norm,
        "source": source,
        "rows": rows,
        "tokens": sum(len(x) for x in ids),
        "seconds": time.perf_counter() - started,
        "step": step,
    }


def _token_ids(run: Run, batch: Batch) -> list[list[int]]:
    """Queries, then positives, then negatives (row-major [b][K]); each role with its own prompt and max length."""
    if batch.ids is not None:  # data.pretokenize: fetched with the rows
        return batch.ids
    docs = batch.positives + [n for negs in batch.negatives for n in negs]
    return run.tokenize(batch.queries, "query") + run.tokenize(docs, "document")


def _chunks(run: Run, ids: list[list[int]]):
    t = run.cfg.train
    return make_chunks(ids, t.chunk_size, run.gte.tokenizer.pad_token_id, t.chunk_tokens, packed=run.packed)


def _encoder(run: Run):
    device = run.accelerator.device

    def encode(chunk: dict[str, torch.Tensor] | Packed) -> torch.Tensor:
        if isinstance(chunk, Packed):
            return run.model(packed=chunk.to(device))  # [c, H]
        return run.model(**{k: v.to(device) for k, v in chunk.items()})  # [c, H]

    return encode


def _hashes(run: Run, batch: Batch) -> dict[str, torch.Tensor]:
    """Global text hashes for duplicate masking (raw texts: a prompt does not make a duplicate a negative)."""
    if not run.cfg.loss.mask_duplicates:
        return {}
    device, b = run.accelerator.device, len(batch.queries)
    out = {"q_hash": text_hash(batch.queries), "d_hash": text_hash(batch.positives)}
    if any(batch.negatives):  # training rows carry K negatives each; validation rows none
        out["neg_hash"] = text_hash([n for negs in batch.negatives for n in negs]).view(b, -1)  # [b, K]
    return {k: gather_nograd(v.to(device)) for k, v in out.items()}  # [W*b(, K)]


def _make_loss_fn(run: Run, batch: Batch, order: torch.Tensor):
    """Embeddings in chunk order [M, H] -> this process's loss over its rows against every process's candidates."""
    cfg, b, k = run.cfg, len(batch.queries), run.cfg.data.num_negatives
    inverse = torch.argsort(order)
    hashes = _hashes(run, batch)

    def loss_fn(emb: torch.Tensor) -> torch.Tensor:
        emb = emb[inverse.to(emb.device)]  # [M, H] back in text order: b queries, b positives, b*K negatives
        q = gather_with_grad(emb[:b])  # [W*b, H]; each column gathered on its own so row i stays one pair
        d = gather_with_grad(emb[b : 2 * b])  # [W*b, H]
        neg = gather_with_grad(emb[2 * b :].reshape(b, k, -1)) if k else None  # [W*b, K, H]
        return contrastive_loss(
            q, d, neg, kind=cfg.loss.kind, temperature=cfg.loss.temperature, rows=local_rows(b), **hashes
        )

    return loss_fn


class _Meter:
    """Accumulates steps between log lines; throughput counts non-padding tokens of every process."""

    def __init__(self) -> None:
        self.steps: list[dict] = []

    def add(self, stats: dict) -> None:
        self.steps.append(stats)

    def flush(self, run: Run, done: int) -> dict:
        last, n = self.steps[-1], len(self.steps)
        device = run.accelerator.device
        loss = all_reduce_mean(torch.stack([s["loss"] for s in self.steps]).mean().to(device)).item()
        tokens = all_reduce_mean(torch.tensor(float(sum(s["tokens"] for s in self.steps)), device=device))
        seconds = max(1e-9, sum(s["seconds"] for s in self.steps))
        norm = last["grad_norm"]
        self.steps = []
        return {
            "kind": "train",
            "step": done,
            "loss": loss,
            "lr": last["lr"],
            "grad_norm": None if norm is None else float(norm),
            "source": last["source"],
            "pass": run.sampler.pass_at(last["step"])[1],
            "first_row": last["rows"][0],
            "rows_crc": zlib.crc32(np.asarray(last["rows"], dtype=np.int64).tobytes()),
            "pairs_per_s": n * run.cfg.train.global_batch_size / seconds,
            "tokens_per_s": tokens.item() * world()[1] / seconds,
            "time": time.time(),
        }


# ---- validation and export ------------------------------------------------------------------------------------
@torch.no_grad()
def _evaluate(run: Run, done: int) -> dict:
    """Validation loss and in-batch top-1 retrieval accuracy on held-out rows (in-batch negatives only, so stage 1
    and stage 2 are measured alike)."""
    cfg, encode = run.cfg, _encoder(run)
    losses, accs = [], []
    run.model.eval()
    for source, rows in _val_batches(run):
        batch = run.data.heldout_batch(source, rows)
        ids = _token_ids(run, batch)
        chunks, order = _chunks(run, ids)
        with run.accelerator.autocast():
            emb = torch.cat([encode(c).float() for c in chunks])[torch.argsort(order).to(run.accelerator.device)]
        b = len(rows)
        q, d = gather_nograd(emb[:b]), gather_nograd(emb[b:])  # [W*b, H]
        losses.append(
            contrastive_loss(
                q, d, None, kind=cfg.loss.kind, temperature=cfg.loss.temperature, **_hashes(run, batch)
            ).item()
        )
        scores = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(d, dim=-1).T  # [N, N]
        accs.append((scores.argmax(dim=1) == torch.arange(len(q), device=q.device)).float().mean().item())
    run.model.train()
    if not losses:
        return {"kind": "eval", "step": done, "val_batches": 0}
    return {
        "kind": "eval",
        "step": done,
        "val_loss": float(np.mean(losses)),
        "val_acc": float(np.mean(accs)),
        "val_batches": len(losses),
    }


def _val_batches(run: Run):
    """(source, this process's rows) of each validation batch: the first data.val_rows held-out rows per source,
    in batches of up to train.global_batch_size split evenly over the processes."""
    rank, size = world()
    for source, n_rows in run.data.heldout_sizes().items():
        n = min(run.cfg.data.val_rows, n_rows)
        batch = min(run.cfg.train.global_batch_size, n) // size * size
        for start in range(0, n - batch + 1, batch) if batch else []:
            b = batch // size
            yield source, list(range(start + rank * b, start + (rank + 1) * b))


def _export(run: Run, cfg_dict: dict) -> Path:
    """Save the final model to <run.dir>/export, check that it reloads to the vectors the trained model gives,
    and mark the run finished."""
    acc, run_dir = run.accelerator, Path(run.cfg.run.dir)
    export_dir = run_dir / "export"
    acc.wait_for_everyone()
    if acc.is_main_process:
        gte = acc.unwrap_model(run.model, keep_fp32_wrapper=False)
        gte.save_pretrained(export_dir, train_config=cfg_dict)
        diff = _check_export(gte, run, export_dir)
        done = {"step": run.cfg.train.max_steps, "export": str(export_dir), "export_max_abs_diff": diff}
        (run_dir / DONE_FILE).write_text(json.dumps(done, indent=2))
        print(f"gte train: exported {export_dir} (reload max |diff| {diff:.2e})", flush=True)
    acc.wait_for_everyone()
    return export_dir


def _check_export(gte, run: Run, export_dir: Path) -> float:
    """Train/inference parity: the export, loaded the way users load it, embeds probe texts like the trained
    model. The probe is kept in <run.dir>/export_probe.json for other clients (sentence-transformers) to check."""
    source = run.data.names[0]
    batch = run.data.train_batch(source, list(range(min(8, run.data.train_sizes()[source]))), 0, 0)
    d = run.cfg.data
    # Literal prefixes (not prompt names): an empty prompt is not stored in the export under its name.
    texts = {"query": (d.query_prompt, batch.queries), "document": (d.doc_prompt, batch.positives)}
    trained = {role: gte.encode(t, prompt=p or None, normalize=True) for role, (p, t) in texts.items()}
    loaded = load_model(export_dir)
    diff = max(
        float(np.abs(loaded.encode(t, prompt=p or None, normalize=True) - trained[role]).max())
        for role, (p, t) in texts.items()
    )
    probe = {role: {"prompt": p, "texts": t, "vectors": trained[role].tolist()} for role, (p, t) in texts.items()}
    (Path(run.cfg.run.dir) / PROBE_FILE).write_text(json.dumps(probe))
    if diff > 1e-4:
        print(f"gte train: WARNING the export reloads to vectors {diff:.2e} away from the trained model's", flush=True)
    return diff
