"""The MLM stage: masked-LM pretraining of a backbone on raw text, before contrastive training (mGTE, ModernBERT,
nomic-embed start this way). `gte mlm CONFIG [key=value ...]`; `stage0` of `gte run` runs it before stage 1.

  CPU, seconds:  .venv/bin/python -m tests.train.tinydata runs/tiny-pairs && gte mlm configs/mlm.yaml \
                     data.train_dir=runs/tiny-pairs model.init_from=tiny train.max_steps=20 run.dir=runs/tiny-mlm
  from scratch:  gte prep configs/prep.yaml out_dir=runs/pairs && gte mlm configs/mlm.yaml data.train_dir=runs/pairs
  then:          gte train configs/pretrain.yaml model.init_from=runs/mlm/export ...

The corpus is the texts of a pairs dir's train split (`gte prep` output: the built-in sources, or any text column of
your files), each column of each row one text. Step s takes texts s*B .. (s+1)*B-1 (B = train.global_batch_size) of
the corpus read pass after pass, each pass in its own seeded order; they are concatenated into sequences of at most
the scheduled length (mlm.max_len_schedule) and masked with a generator seeded by (train.seed, step, process): a
step's data and masks are a pure function of the step, so the resume is exact. The encoder runs unpadded where the
family has a packed forward (gte_model.families), and the head predicts the masked tokens only (train.masking).

It runs in training's one loop (train.loop.fit with MLMTrainer): the same run record, checkpoints, exact resume,
preemption, metrics.jsonl and plot. The export (<run.dir>/export) is the backbone alone, pooling as model.pooling,
without the head: stage 1 starts from it (model.init_from=<run.dir>/export).
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gte_model import GTEModel, collate, load_model, pack, supports_packing
from gte_model.core.config import config_from_argv
from gte_model.core.errors import UserError
from gte_model.export import export_model
from gte_model.families import max_positions, packed_forward
from train.backend import make_accelerator, make_updater
from train.build import build_optimizer
from train.checkpoint import Checkpointing
from train.data import PairsData
from train.distributed import world
from train.loop import fit
from train.masking import IGNORE, MLMHead, mask_tokens, mlm_loss
from train.mlm_config import MLMConfig, max_len_at
from train.trainer import EXPORT_TOLERANCE, ExportMismatch, StepStats, lr_factor

SOURCE = "mlm"  # the `source` of every metrics line: one corpus, not one source per batch


class TextStream:
    """The corpus as one endless sequence of texts: pass p is every (source, column, row) in the order of a
    permutation seeded by (seed, p). Fetches by index, never loads the corpus."""

    def __init__(self, data: PairsData, columns: list[str], texts_per_step: int, seed: int) -> None:
        self.data, self.columns, self.texts_per_step, self.seed = data, list(columns), texts_per_step, seed
        sizes = data.train_sizes()
        self.blocks = [(s, c, sizes[s]) for s in data.names for c in self.columns]  # corpus = these blocks in order
        self.starts = np.cumsum([0] + [n for _, _, n in self.blocks])
        self.total = int(self.starts[-1])
        if not self.total:
            raise UserError(f"data.train_dir={data.root}: its train split holds no rows; run `gte prep` first")
        self._orders: dict[int, np.ndarray] = {}

    def indices(self, step: int) -> list[int]:
        """Positions in the endless stream of the texts of step `step` (all processes')."""
        first = step * self.texts_per_step
        return list(range(first, first + self.texts_per_step))

    def pass_at(self, step: int) -> tuple[str, int]:
        """(SOURCE, pass over the corpus) of step `step`: the epoch to log."""
        return SOURCE, step * self.texts_per_step // self.total

    def texts(self, positions: list[int]) -> list[str]:
        """The texts at these stream positions, in that order."""
        where = [self._locate(p) for p in positions]  # (block, row)
        wanted: dict[str, set[int]] = {}
        for block, row in where:
            wanted.setdefault(self.blocks[block][0], set()).add(row)
        fetched = {}
        for source, rows in wanted.items():
            rows = sorted(rows)
            batch = self.data.train_batch(source, rows, self.seed, 0)
            by_column = {"query": batch.queries, "positive": batch.positives}
            fetched[source] = {c: dict(zip(rows, by_column[c])) for c in self.columns}
        return [fetched[self.blocks[b][0]][self.blocks[b][1]][row] for b, row in where]

    def _locate(self, position: int) -> tuple[int, int]:
        epoch, i = divmod(position, self.total)
        j = int(self._order(epoch)[i])
        block = int(np.searchsorted(self.starts, j, side="right")) - 1
        return block, j - int(self.starts[block])

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {k: v for k, v in self._orders.items() if k >= epoch - 1}  # a step spans two passes at most
            self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.total)
        return self._orders[epoch]


def concatenate(ids: list[list[int]], max_len: int, cls_id: int, sep_id: int) -> list[list[int]]:
    """Token id lists -> sequences `[CLS] a [SEP] b [SEP] ...` of at most max_len tokens, in order; a text longer
    than max_len - 2 tokens is cut to it. Empty texts are dropped."""
    seqs, current = [], [cls_id]
    for text in ids:
        text = list(text[: max_len - 2])
        if not text:
            continue
        if len(current) + len(text) + 1 > max_len:
            seqs.append(current)
            current = [cls_id]
        current += [*text, sep_id]
    if len(current) > 1:
        seqs.append(current)
    return seqs


class MaskedLM(nn.Module):
    """The encoder of a GTEModel + an MLM head over its word embeddings (tied): the module the MLM stage trains."""

    def __init__(self, gte: GTEModel, packed: bool) -> None:
        super().__init__()
        cfg = gte.backbone.config
        self.gte = gte
        self.head = MLMHead(cfg.hidden_size, gte.backbone.get_input_embeddings().weight.shape[0],
                            getattr(cfg, "layer_norm_eps", 1e-12))
        self.packed = packed

    def forward(self, seqs: list[list[int]], targets: torch.Tensor) -> tuple[torch.Tensor, int]:
        """seqs: masked token ids per sequence; targets [T]: the concatenated sequences' targets (IGNORE where not
        predicted). Returns (mean loss over the predicted tokens, how many of them the argmax gets right)."""
        device = targets.device
        backbone = self.gte.backbone
        if self.packed:
            hidden = packed_forward(backbone, pack(seqs).to(device))  # [T, H]
        else:
            batch = {k: v.to(device) for k, v in collate(seqs, self.gte.tokenizer.pad_token_id).items()}
            out = backbone(**batch).last_hidden_state  # [B, W, H]
            hidden = out[batch["attention_mask"].bool()]  # [T, H], row after row: the order of `targets`
        picked = targets != IGNORE
        if not bool(picked.any()):  # nothing to predict (a tiny step): zero loss, gradients stay defined
            return hidden.sum() * 0.0, 0
        logits = self.head(hidden[picked], backbone.get_input_embeddings().weight)  # [M, V]
        return mlm_loss(logits, targets[picked])


class MLMTrainer(Checkpointing):
    """train.trainer.Trainer's interface (resume, step, validate, save, export) for the MLM stage, so that
    train.loop.fit runs it: the same loop, records, checkpoints and metrics."""

    def __init__(self, cfg: MLMConfig) -> None:
        from accelerate.utils import set_seed

        self.cfg = cfg
        self.run_dir = Path(cfg.run.dir)
        self.accelerator = make_accelerator(cfg)
        set_seed(cfg.train.seed)  # before the model and head: a preset's random init depends on it
        m, d = cfg.model, cfg.data
        self.gte = load_model(m.init_from, pooling=m.pooling, tokenizer_from=m.tokenizer_from or None,
                              trust_remote_code=m.trust_remote_code, trust_flag="model.trust_remote_code=true")
        self.special = self._special_ids()
        self.gte.max_seq_len = max(length for _, length in cfg.mlm.max_len_schedule)
        self._check_positions()
        self.packed = cfg.train.packed and supports_packing(self.gte.backbone)
        with self.accelerator.main_process_first():  # the first process builds the Arrow cache, the others reuse it
            data = PairsData(d.train_dir, d.sources or None, d.cache_dir or self.run_dir / "cache",
                             heldout=d.val_rows > 0, verify_shards=self.accelerator.is_local_main_process)
        self.data = data
        self.sampler = TextStream(data, d.columns, cfg.train.global_batch_size, cfg.train.seed)
        net = MaskedLM(self.gte, self.packed).train()
        self.model, self.optimizer = self.accelerator.prepare(net, build_optimizer(net, cfg))
        self.updater = make_updater(self.accelerator, self.model, self.optimizer, cfg.optim.max_grad_norm)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def _special_ids(self) -> dict[str, int]:
        tok = self.gte.tokenizer
        ids = {"cls": tok.cls_token_id, "sep": tok.sep_token_id, "mask": tok.mask_token_id}
        missing = [k for k, v in ids.items() if v is None]
        if missing:
            raise UserError(f"model.init_from={self.cfg.model.init_from}: its tokenizer has no {missing} token(s), "
                            "which masked-LM pretraining needs; use a tokenizer with [CLS], [SEP] and [MASK] "
                            "(model.tokenizer_from=...)")
        return ids

    def _check_positions(self) -> None:
        limit, longest = max_positions(self.gte.backbone), self.gte.max_seq_len
        if limit is not None and longest > limit:
            raise UserError(f"mlm.max_len_schedule={self.cfg.mlm.max_len_schedule}: {longest} tokens exceed the "
                            f"{limit} positions of model.init_from={self.cfg.model.init_from}; keep every length "
                            f"<= {limit} or start from a longer-context preset (gte-modern-base: 8,192)")

    # ---- one step ---------------------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        o = self.cfg.optim
        return o.lr * lr_factor(step, warmup=o.warmup_steps, total=self.cfg.train.max_steps, schedule=o.schedule)

    def masked(self, texts: list[str], max_len: int, seed: list[int]) -> tuple[list[list[int]], torch.Tensor]:
        """Texts -> (masked sequences, longest first, targets [T] of their concatenation): sequences of at most
        max_len tokens, masked by a generator seeded with `seed`."""
        ids = self.gte.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_len - 2)["input_ids"]
        seqs = concatenate(ids, max_len, self.special["cls"], self.special["sep"])
        seqs.sort(key=len, reverse=True)  # packed attention groups hold rows of similar length
        flat = torch.tensor([t for s in seqs for t in s], dtype=torch.long)  # [T]
        maskable = (flat != self.special["cls"]) & (flat != self.special["sep"])
        generator = torch.Generator().manual_seed(zlib.crc32(np.asarray(seed, dtype=np.int64).tobytes()))
        inputs, targets = mask_tokens(flat, maskable, self.cfg.mlm.mask_rate, self.special["mask"],
                                      len(self.gte.tokenizer), generator)
        return [x.tolist() for x in torch.split(inputs, [len(s) for s in seqs])], targets

    def step(self, step: int) -> StepStats:
        started = time.perf_counter()
        rank, size = world()
        positions = self.sampler.indices(step)
        share = len(positions) // size
        texts = self.sampler.texts(positions[rank * share:(rank + 1) * share])
        t = self.cfg.train
        seqs, targets = self.masked(texts, max_len_at(self.cfg.mlm.max_len_schedule, step), [t.seed, step, rank])
        with self.accelerator.autocast():
            loss, _ = self.model(seqs, targets.to(self.accelerator.device))
        self.updater.backward(loss)
        loss, lr = loss.detach(), self.lr_at(step)
        norm, applied = self.updater.update(loss, lr)
        return StepStats(step, float(loss), lr, norm, applied, SOURCE, positions, len(targets),
                         time.perf_counter() - started)

    # ---- validation -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        """Masked-LM loss and top-1 accuracy on the texts of the first data.val_rows held-out rows per source, at
        the first scheduled length, with the same masks at every validation (seeded by train.seed alone)."""
        d, length = self.cfg.data, self.cfg.mlm.max_len_schedule[0][1]
        texts = []
        for source, n_rows in self.data.heldout_sizes().items():
            if not min(d.val_rows, n_rows):
                continue
            batch = self.data.heldout_batch(source, list(range(min(d.val_rows, n_rows))))
            texts += [t for c in d.columns for t in {"query": batch.queries, "positive": batch.positives}[c]]
        if not texts:
            return {"val_batches": 0}
        total, correct, count, size = 0.0, 0, 0, self.cfg.train.global_batch_size
        self.model.eval()
        for i, start in enumerate(range(0, len(texts), size)):
            seqs, targets = self.masked(texts[start:start + size], length, [self.cfg.train.seed, -1, i])
            with self.accelerator.autocast():
                loss, right = self.model(seqs, targets.to(self.accelerator.device))
            picked = int((targets != IGNORE).sum())
            total, correct, count = total + float(loss) * picked, correct + right, count + picked
        self.model.train()
        return {"val_loss": total / max(count, 1), "val_acc": correct / max(count, 1), "val_tokens": count}

    # ---- export -----------------------------------------------------------------------------------------------
    def export(self, config: dict) -> tuple[Path, float]:
        """The backbone (no head) to <run.dir>/export; returns (folder, max |weight diff| of the reloaded export),
        ExportMismatch above EXPORT_TOLERANCE."""
        acc, export_dir, diff = self.accelerator, self.run_dir / "export", 0.0
        acc.wait_for_everyone()
        if self.is_main:
            gte = acc.unwrap_model(self.model, keep_fp32_wrapper=False).gte
            export_model(gte, export_dir, train_config=config, key="run.dir", what="gte train", overwrite=True)
            loaded = load_model(export_dir, trust_remote_code=self.cfg.model.trust_remote_code).backbone.state_dict()
            diff = max(float((v.float() - loaded[k].float()).abs().max()) for k, v in gte.backbone.state_dict().items()
                       if v.is_floating_point())
            if not diff <= EXPORT_TOLERANCE:
                raise ExportMismatch(f"{export_dir}: the exported backbone reloads {diff:.2e} away from the trained "
                                     f"weights (tolerance {EXPORT_TOLERANCE}); the run is not marked done")
        acc.wait_for_everyone()
        return export_dir, diff


def main(argv: list[str] | None = None) -> int:
    """`gte mlm CONFIG [key=value ...]`, e.g. `gte mlm configs/mlm.yaml data.train_dir=runs/pairs optim.lr=1e-4`."""
    cfg = config_from_argv(MLMConfig, argv, __doc__)
    if cfg is not None:
        fit(cfg, trainer=MLMTrainer)
    return 0


__all__ = ["MLMTrainer", "MaskedLM", "TextStream", "concatenate", "main"]
