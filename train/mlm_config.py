"""The MLM stage's config schema (`gte mlm`, and `stage0` of `gte run`): one dataclass per section, each field
documented where it is declared. run, optim and log are training's own sections (train.config); the loop keys are
the subset of training's that the MLM stage uses, with the same meaning.

The keys users touch most:
  model.init_from          a preset (random weights: the from-scratch start) or a folder to continue pretraining
  data.train_dir           a pairs dir (`gte prep` output): its train split's texts are the corpus
  mlm.mask_rate            share of tokens predicted (0.30, as ModernBERT and mGTE; BERT used 0.15)
  mlm.max_len_schedule     [[first step, tokens per sequence], ...]: the long-context schedule
  train.global_batch_size  texts per optimizer step, concatenated into sequences of the scheduled length
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gte_model.core.config import bounded, field_problems
from gte_model.core.pairs import TEXT_COLUMNS
from train.config import PRECISIONS, LogConfig, OptimConfig, RunConfig, launch_world_size, launch_zero_stage

MIN_SEQ_LEN = 8  # tokens per sequence below this leave almost nothing to predict


@dataclass
class MLMModelConfig:
    init_from: str = "tiny"  # preset (random init: from scratch), packaged name, or a folder (continued pretraining)
    tokenizer_from: str = ""  # presets only: tokenizer folder; empty = the packaged MiniLM WordPiece vocabulary
    # pooling the exported backbone is written with (stage 1 may set its own): mean (GTE) or cls
    pooling: str = bounded("mean", choices=("mean", "cls"))
    trust_remote_code: bool = False  # run init_from's own model code (config.json auto_map): read it first


@dataclass
class MLMDataConfig:
    train_dir: str = ""  # pairs dir (manifest.json) whose train split is the corpus (required)
    sources: list[str] = field(default_factory=list)  # read these manifest sources only; empty = all
    # the pairs dir's text columns read, each row's value in each a text of the corpus (the built-in sources' or
    # your files' texts, as `gte prep` wrote them)
    columns: list[str] = field(default_factory=lambda: list(TEXT_COLUMNS))
    # held-out rows per source whose texts give the validation loss and accuracy (fixed masks); 0 = no validation
    val_rows: int = bounded(64, ge=0)
    cache_dir: str = ""  # datasets' Arrow cache of the parquet shards; empty = <run.dir>/cache


@dataclass
class MLMLoopConfig:
    # texts per optimizer step over ALL processes; they are concatenated ([CLS] a [SEP] b [SEP] ...) into sequences
    # of at most the scheduled length, so one step holds about this many texts' tokens whatever the length
    global_batch_size: int = bounded(256, ge=1)
    packed: bool = True  # unpadded forward where the family has one (train.packed); else padded sequences
    max_steps: int = bounded(1000, ge=1)  # optimizer steps in total (a resumed run continues up to this)
    checkpoint_every: int = bounded(500, ge=0)  # steps between checkpoints (0 = only the final export)
    keep_checkpoints: int = bounded(2, ge=1)  # newest checkpoints kept on disk
    eval_every: int = bounded(500, ge=0)  # steps between validations (0 = only at the end)
    seed: int = 42  # seeds init, dropout, the text order and the masks
    precision: str = bounded("fp32", choices=PRECISIONS)  # fp32, bf16 (autocast) or fp16 (GPUs)
    log_every: int = bounded(10, ge=1)  # steps between metrics.jsonl lines
    max_bad_steps: int = bounded(3, ge=1)  # non-finite steps in a row that stop the run (as in training)
    inexact_resume: bool = False  # resume although a checkpoint's RNG state is missing (dropout then differs)
    # export the checkpoint with the best validation value instead of the last step's ("" = the last step); as in
    # training (train.best), for the MLM stage's own validation: val_loss (lowest) or val_acc
    best_metric: str = bounded("", choices=("", "val_loss", "val_acc"))
    patience: int = bounded(0, ge=0)  # stop after this many validations without a new best (0 = never early)


@dataclass
class MaskingConfig:
    # share of the maskable (non-special) tokens predicted: 80% of them become [MASK], 10% a random token, 10% stay
    mask_rate: float = bounded(0.30, gt=0, lt=1, hint="ModernBERT and mGTE use 0.30, BERT 0.15")
    # [[first step, tokens per sequence], ...] from step 0, steps increasing: the sequence length rises during the
    # run (mGTE: 2,048 then 8,192); each length at most the backbone's positions
    max_len_schedule: list[list[int]] = field(default_factory=lambda: [[0, 128]])


@dataclass
class MLMConfig:
    run: RunConfig = field(default_factory=lambda: RunConfig(dir="runs/mlm"))
    model: MLMModelConfig = field(default_factory=MLMModelConfig)
    data: MLMDataConfig = field(default_factory=MLMDataConfig)
    train: MLMLoopConfig = field(default_factory=MLMLoopConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4, warmup_steps=50))
    mlm: MaskingConfig = field(default_factory=MaskingConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def validate(self, world_size: int | None = None, zero_stage: int | None = None) -> list[str]:
        """Every problem, in override spelling; world_size / zero_stage as in TrainConfig.validate."""
        world_size = launch_world_size() if world_size is None else world_size
        zero_stage = launch_zero_stage() if zero_stage is None else zero_stage
        errors = field_problems(self) + schedule_problems(self.mlm.max_len_schedule)
        if not self.data.train_dir:
            errors.append("data.train_dir is not set: point it at a pairs dir with manifest.json (data.train_dir=...)")
        bad = [c for c in self.data.columns if c not in TEXT_COLUMNS]
        if bad or not self.data.columns:
            errors.append(f"data.columns={list(self.data.columns)}: choose from {list(TEXT_COLUMNS)}")
        t = self.train
        if t.best_metric and not (self.data.val_rows and t.eval_every):
            errors.append(f"train.best_metric={t.best_metric}: needs validations; set data.val_rows and "
                          "train.eval_every")
        if t.patience and not t.best_metric:
            errors.append(f"train.patience={t.patience}: needs train.best_metric (val_loss or val_acc)")
        if self.optim.warmup_steps > self.train.max_steps:
            errors.append(f"optim.warmup_steps={self.optim.warmup_steps} exceeds train.max_steps="
                          f"{self.train.max_steps}: lower optim.warmup_steps")
        if self.train.global_batch_size % world_size:
            errors.append(f"train.global_batch_size={self.train.global_batch_size} is not divisible by the "
                          f"{world_size} processes; use a multiple of {world_size}")
        if zero_stage >= 3:
            errors.append(f"DeepSpeed ZeRO stage {zero_stage}: the export does not gather partitioned parameters; "
                          "launch with configs/accelerate/deepspeed_zero2.yaml (or zero1/ddp)")
        return errors


def schedule_problems(schedule: list[list[int]]) -> list[str]:
    """mlm.max_len_schedule: pairs [step, length], the first at step 0, steps increasing, lengths >= MIN_SEQ_LEN."""
    key = f"mlm.max_len_schedule={[list(p) for p in schedule]}"
    if not schedule or any(len(p) != 2 for p in schedule):
        return [f"{key}: must be [[first step, tokens per sequence], ...], e.g. [[0,128],[800,512]]"]
    steps, lengths = [p[0] for p in schedule], [p[1] for p in schedule]
    errors = []
    if steps[0] != 0 or any(b <= a for a, b in zip(steps, steps[1:])):
        errors.append(f"{key}: the first entry starts at step 0 and steps increase, e.g. [[0,128],[800,512]]")
    if min(lengths) < MIN_SEQ_LEN:
        errors.append(f"{key}: every length must be >= {MIN_SEQ_LEN} tokens")
    return errors


def max_len_at(schedule: list[list[int]], step: int) -> int:
    """Tokens per sequence at `step`: the length of the last schedule entry starting at or before it."""
    return [length for first, length in schedule if first <= step][-1]


__all__ = ["MLMConfig", "MaskingConfig", "max_len_at", "schedule_problems"]
