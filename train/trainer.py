"""The Trainer: everything one stage needs, built once, with one public method per thing the loop does.

  trainer = Trainer(cfg)          model, data, sampler, optimizer, step function (plain or cached, chosen here)
  start = trainer.resume()        the newest intact checkpoint, or step 0
  stats = trainer.step(step)      one optimizer step on the global batch the sampler names for `step` (with
                                  train.prefetch, the next step's batch is read ahead meanwhile: same result)
  trainer.validate()              validation loss / in-batch accuracy on held-out rows
  trainer.save(done, state)       a checkpoint
  trainer.export()                the final model, reload-checked
Benchmarks and tests use these names only; the loop that calls them is train.loop.fit.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gte_model import GTEModel, Packed, load_model, supports_packing
from gte_model.export import export_model
from gte_model.families import FAMILIES
from train.backend import Updater, make_accelerator, make_updater
from train.batch import Batch
from train.build import build_model, build_optimizer
from train.checkpoint import Checkpointing
from train.config import TrainConfig, grad_cache_notice, uses_grad_cache
from train.data import PairsData
from train.distributed import world
from train.grad_cache import cached_step
from train.objective import make_loss_fn, validation_scores
from train.prefetch import ReadAhead
from train.sampler import SourceBatchSampler
from train.step import make_chunks, plain_step
from train.teacher import load_teacher
from train.tokens import RoleTokenizer

PROBE_FILE = "export_probe.json"
EXPORT_TOLERANCE = 1e-4  # max |diff| between the trained model's vectors and the reloaded export's
COMPILE_BACKEND = "inductor"  # torch.compile backend of train.compile (tests use "aot_eager": no C++ build)


class ExportMismatch(RuntimeError):
    """The export reloads to other vectors than the trained model gives: it is not written as done."""


@dataclass
class StepStats:
    step: int
    loss: float
    lr: float
    grad_norm: float | None
    applied: bool  # False: a non-finite loss or gradient norm, the update was skipped
    source: str
    rows: list[int]
    tokens: int
    seconds: float


@dataclass
class Prepared:
    """The host side of one step, ready before it runs: rows fetched, token ids, chunks (in pinned memory on CUDA)."""

    step: int
    source: str
    rows: list[int]  # the global batch's rows
    batch: Batch  # this process's share
    chunks: list
    order: torch.Tensor
    tokens: int  # real (non-padding, non-filler) tokens
    teacher: tuple | torch.Tensor | None = None  # the batch's teacher vectors or scores (train.teacher), if used


def lr_factor(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of optim.lr for the step after `step` completed ones: linear warmup, then decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


class Trainer(Checkpointing):
    def __init__(self, cfg: TrainConfig) -> None:
        from accelerate.utils import set_seed

        self.cfg = cfg
        self.run_dir = Path(cfg.run.dir)
        self.accelerator = make_accelerator(cfg)
        set_seed(cfg.train.seed)  # before the model: a preset's random init depends on it
        self.gte: GTEModel = build_model(cfg)
        d = cfg.data
        self.tokenize = RoleTokenizer(self.gte.tokenizer, d.query_prompt, d.doc_prompt, d.query_max_len,
                                      d.doc_max_len, dict(d.prompts))
        with self.accelerator.main_process_first():  # the first process builds the Arrow cache, the others reuse it
            self.data = PairsData(d.train_dir, d.sources or None, d.cache_dir or self.run_dir / "cache",
                                  d.num_negatives, heldout=d.val_rows > 0, repeat_negatives=d.repeat_negatives,
                                  batch_rows=cfg.train.global_batch_size,
                                  verify_shards=self.accelerator.is_local_main_process)
            if d.pretokenize:
                self.data.pretokenize(self.tokenize, self.tokenize.key(), num_proc=min(4, os.cpu_count() or 1))
        self.sampler = SourceBatchSampler(self.data.train_sizes(), cfg.train.global_batch_size, cfg.sampler.alpha,
                                          cfg.train.seed)
        # prepare()'s own: the sampler caches per-block counts and is not thread-safe (same pure function of the step)
        self._prepare_sampler = SourceBatchSampler(self.data.train_sizes(), cfg.train.global_batch_size,
                                                   cfg.sampler.alpha, cfg.train.seed)
        prefetch = {"on": True, "off": False}.get(cfg.train.prefetch, self.accelerator.device.type == "cuda")
        self.read_ahead = ReadAhead(self.prepare, prefetch)
        self.teacher = None
        if cfg.loss.uses_teacher:
            with self.accelerator.main_process_first():  # the main process creates the cache's namespace folders
                self.teacher = load_teacher(cfg.teacher, self.run_dir / "teacher_cache", persist=self.is_main)
        self.optimizer = build_optimizer(self.gte, cfg)
        self.model, self.optimizer = self.accelerator.prepare(self.gte, self.optimizer)
        self.updater: Updater = make_updater(self.accelerator, self.model, self.optimizer, cfg.optim.max_grad_norm)
        u = self.updater
        if uses_grad_cache(cfg, world()[1]):
            self.step_fn = functools.partial(cached_step, backward=u.backward, autocast=self.accelerator.autocast,
                                             no_sync=u.no_sync)
        else:
            self.step_fn = functools.partial(plain_step, backward=u.backward, autocast=self.accelerator.autocast)
        notice = grad_cache_notice(cfg, world()[1])
        if notice and self.is_main:
            print(f"gte train: {notice}", flush=True)
        self._compiled = torch.compile(self.model, backend=COMPILE_BACKEND) if cfg.train.compile else None
        self.packed = cfg.train.packed and supports_packing(self.gte.backbone)
        t = cfg.train
        cpu_bf16 = self.accelerator.device.type == "cpu" and t.precision == "bf16"
        self.bucket = t.bucket == "on" or (t.bucket == "auto" and (t.compile or cpu_bf16))
        if cfg.train.packed and not self.packed and self.is_main:
            print(f"gte train: train.packed=true needs an encoder of a known family ({', '.join(FAMILIES)}) or an "
                  "encoder or decoder whose attention goes through transformers' attention interface; this is "
                  f"{type(self.gte.backbone).__name__}; using padded chunks (set train.packed=false to silence this)",
                  flush=True)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # ---- one step ---------------------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        o = self.cfg.optim
        return o.lr * lr_factor(step, warmup=o.warmup_steps, total=self.cfg.train.max_steps, schedule=o.schedule)

    def chunks(self, ids: list[list[int]]):
        t = self.cfg.train
        return make_chunks(ids, t.chunk_size, self.gte.tokenizer.pad_token_id, t.chunk_tokens, packed=self.packed,
                           bucket=self.bucket)

    def prepare(self, step: int) -> Prepared:
        """Everything step `step` needs from the host: its rows fetched, tokenised and cut into chunks."""
        rank, size = world()
        source, rows = self._prepare_sampler.batch_at(step)
        local = self._prepare_sampler.local(rows, rank, size)
        batch = self.data.train_batch(source, local, self.cfg.train.seed, step)
        ids = batch.token_ids(self.tokenize)
        chunks, order = self.chunks(ids)
        if self.accelerator.device.type == "cuda":  # page-locked: encode's copies then overlap the GPU's work
            chunks = [c.pin_memory() if isinstance(c, Packed) else {k: v.pin_memory() for k, v in c.items()}
                      for c in chunks]
        teacher = self.teacher(batch) if self.teacher is not None else None
        return Prepared(step, source, rows, batch, chunks, order, sum(len(x) for x in ids), teacher)

    def encode(self, chunk: dict[str, torch.Tensor] | Packed) -> torch.Tensor:
        device = self.accelerator.device
        cuda = device.type == "cuda"
        if isinstance(chunk, Packed):
            emb = self._forward({"packed": chunk.to(device, non_blocking=cuda)})  # [c (+ filler), H]
            return emb[: chunk.real_rows] if chunk.fill_rows else emb
        return self._forward({k: v.to(device, non_blocking=cuda) for k, v in chunk.items()})  # [c, H]

    def _forward(self, inputs: dict) -> torch.Tensor:
        if self._compiled is None or not self.model.training:
            return self.model(**inputs)
        if torch.is_grad_enabled():
            return self._compiled(**inputs)
        # Phase 1 of the cached step (no grad) runs the training graph too: then it draws its dropout masks with the
        # very code that phase 3 replays (a no-grad graph is another compiled program, whose random draws need not
        # match), and one graph per shape is compiled, not two. no_sync: DDP must not expect this forward's backward.
        with self.updater.no_sync(), torch.enable_grad():
            return self._compiled(**inputs).detach()

    def step(self, step: int) -> StepStats:
        started = time.perf_counter()
        ready = self.read_ahead.get(step)
        if step + 1 < self.cfg.train.max_steps:
            self.read_ahead.start(step + 1)  # overlaps this step's compute
        loss_fn = make_loss_fn(ready.batch, ready.order, self.cfg.loss, self.accelerator.device, ready.teacher)
        loss = self.step_fn(self.encode, ready.chunks, loss_fn)
        lr = self.lr_at(step)
        norm, applied = self.updater.update(loss, lr)
        return StepStats(step, float(loss), lr, norm, applied, ready.source, ready.rows, ready.tokens,
                         time.perf_counter() - started)

    # ---- validation -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        """Validation loss, in-batch top-1 retrieval accuracy and nDCG@10 on the dev rows (in-batch negatives only,
        so stage 1 and stage 2 are measured alike)."""
        losses, accs, ndcgs = [], [], []
        self.read_ahead.wait()  # the tokenizer and the data are the main thread's from here
        self.model.eval()
        for source, rows in self._val_batches():
            batch = self.data.heldout_batch(source, rows)
            chunks, order = self.chunks(batch.token_ids(self.tokenize))
            with self.accelerator.autocast():
                emb = torch.cat([self.encode(c).float() for c in chunks])
            loss, acc, ndcg = validation_scores(batch, emb[torch.argsort(order).to(emb.device)], self.cfg.loss)
            losses.append(loss)
            accs.append(acc)
            ndcgs.append(ndcg)
        self.model.train()
        if not losses:
            return {"val_batches": 0}
        return {"val_loss": float(np.mean(losses)), "val_acc": float(np.mean(accs)),
                "val_ndcg@10": float(np.mean(ndcgs)), "val_batches": len(losses)}

    def _val_batches(self):
        """(source, this process's rows) of each validation batch: the first data.val_rows held-out rows per source,
        in batches of up to train.global_batch_size split evenly over the processes."""
        rank, size = world()
        for source, n_rows in self.data.heldout_sizes().items():
            n = min(self.cfg.data.val_rows, n_rows)
            batch = min(self.cfg.train.global_batch_size, n) // size * size
            for start in range(0, n - batch + 1, batch) if batch else []:
                b = batch // size
                yield source, list(range(start + rank * b, start + (rank + 1) * b))

    # ---- export -----------------------------------------------------------------------------------------------
    def export(self, config: dict) -> tuple[Path, float]:
        """Save the model to <run.dir>/export and check that it reloads to the trained model's vectors; returns
        (folder, max |diff|). Raises ExportMismatch (after which nothing is marked done) when it does not."""
        acc, export_dir, diff = self.accelerator, self.run_dir / "export", 0.0
        self.read_ahead.wait()
        acc.wait_for_everyone()
        if self.is_main:
            gte = acc.unwrap_model(self.model, keep_fp32_wrapper=False)
            export_model(gte, export_dir, train_config=config, lora_export=self.cfg.model.lora.export,
                         key="run.dir", what="gte train", overwrite=True)  # the run's own export, redone
            diff = self._check_export(gte, export_dir)
        acc.wait_for_everyone()
        return export_dir, diff

    def _check_export(self, gte: GTEModel, export_dir: Path) -> float:
        """Train/inference parity: the export, loaded the way users load it, embeds probe texts like the trained
        model. The probe is kept in <run.dir>/export_probe.json for other clients (sentence-transformers)."""
        source = self.data.names[0]
        batch = self.data.train_batch(source, list(range(min(8, self.data.train_sizes()[source]))), 0, 0)
        d = self.cfg.data
        # Literal prefixes (not prompt names): an empty prompt is not stored in the export under its name.
        texts = {"query": (d.query_prompt, batch.queries), "document": (d.doc_prompt, batch.positives)}
        trained = {role: gte.encode(t, prompt=p or None, normalize=True) for role, (p, t) in texts.items()}
        loaded = load_model(export_dir, trust_remote_code=self.cfg.model.trust_remote_code)
        diff = max(float(np.abs(loaded.encode(t, prompt=p or None, normalize=True) - trained[role]).max())
                   for role, (p, t) in texts.items())
        probe = {role: {"prompt": p, "texts": t, "vectors": trained[role].tolist()} for role, (p, t) in texts.items()}
        (self.run_dir / PROBE_FILE).write_text(json.dumps(probe))
        if not diff <= EXPORT_TOLERANCE:
            raise ExportMismatch(f"{export_dir}: the export reloads to vectors {diff:.2e} away from the trained "
                                 f"model's (tolerance {EXPORT_TOLERANCE}); the run is not marked done")
        return diff


__all__ = ["ExportMismatch", "Prepared", "StepStats", "Trainer", "lr_factor"]
