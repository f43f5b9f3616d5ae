"""The training config schema: one dataclass per section, each field documented where it is declared.

Loaded with gte_model.core.config.load_config: defaults <- YAML <- `key=value` overrides; unknown keys and wrong types
fail with a close-match hint, and `TrainConfig.validate` reports every cross-field problem at once, spelled the
way you would fix it on the command line (`train.chunk_size=...`).

The keys users touch most:
  run.dir                 where checkpoints, metrics.jsonl, config.yaml, the plot and export/ go; re-running the
                          same command on it resumes from its newest checkpoint (a finished run is a no-op)
  model.init_from         a preset (tiny, gte-small, gte-base, gte-large, gte-modern-base), a packaged name
                          (all-MiniLM-L6-v2) or a folder (e.g. the stage-1 export for stage 2)
  data.train_dir          a pairs dir (manifest.json) written by `gte prep` / `gte mine`
  data.num_negatives      hard negatives per query (0 in stage 1; >= 1 in stage 2, needs mined negatives)
  train.global_batch_size pairs per optimizer step over ALL processes: the in-batch negative pool
  train.chunk_size        texts per forward pass; with train.grad_cache=true memory is set by this, not the batch
                          (a chunk_size above the texts of one step is clamped to them, with a notice)
  train.packed            unpadded forward (default true): faster than padded chunks on the same texts, same loss
  train.max_steps, train.checkpoint_every, train.keep_checkpoints, train.eval_every, train.seed
  loss.kind               gte (one joint partition function) or infonce (query -> documents only)
  model.lora.r            LoRA rank (0 = full fine-tuning); model.lora.alpha, .dropout, .target_modules, .export
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from gte_model.core.config import bounded, field_problems
from gte_model.core.mixing import GTE_ALPHA
from gte_model.embed_config import TeacherConfig
from train.best import BEST_METRICS
from train.loss import DISTILL_KINDS, LOSSES

PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("linear", "cosine", "constant")
WANDB_MODES = ("auto", "on", "off")


@dataclass
class RunConfig:
    dir: str = "runs/train"  # run directory: config.yaml, metrics.jsonl, checkpoints/, export/, gte_record.json
    name: str = ""  # a label for wandb and the logs; empty = the run directory's name
    # start afresh: delete this run dir's checkpoints, metrics and export (only if gte wrote them) instead of
    # refusing a resume whose config or inputs changed
    overwrite: bool = False


@dataclass
class LoraConfig:
    """Low-rank adapters (gte_model.lora): only they train, the base model is frozen, the optimizer holds only them."""

    r: int = bounded(0, ge=0)  # adapter rank; 0 = off (full fine-tuning)
    # scaling: the update B A is multiplied by alpha / r
    alpha: float = bounded(16.0, gt=0, hint="commonly 2 x model.lora.r")
    dropout: float = bounded(0.0, ge=0, le=0.99, hint="0 to 0.1")  # dropout on each adapter's input
    # last names of the Linear layers to adapt (BERT: query, key, value, dense; Llama, Qwen: q_proj, k_proj, v_proj,
    # o_proj, gate_proj, up_proj, down_proj); all-linear = every Linear of the backbone (BERT's unused pooler
    # excluded). A name the backbone lacks is an error listing the names it has
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    # merged = the adapter folded into the weights (a plain model every client loads); adapter = base weights plus a
    # PEFT adapter folder (adapter_config.json) that sentence-transformers and transformers load with peft installed
    export: str = bounded("merged", choices=("merged", "adapter"))


@dataclass
class ModelConfig:
    init_from: str = "tiny"  # preset (tiny/gte-small/gte-base/gte-large/gte-modern-base), packaged name, or a folder
    # mean (GTE), cls, or last: each text's last token, the EOS the tokenizer appends (decoder LLMs; gte_model.decoder)
    pooling: str = bounded("mean", choices=("mean", "cls", "last"))
    # decoder LLMs only: attend both ways instead of causally (NV-Embed, LLM2Vec); saved as is_causal=false in the
    # export's config.json. false keeps the backbone's own (a bidirectional export stays bidirectional)
    bidirectional: bool = False
    normalize: bool = True  # export with L2 normalisation (training always scores by cosine)
    tokenizer_from: str = ""  # presets only: tokenizer folder; empty = the packaged MiniLM WordPiece vocabulary
    # max_seq_length the export serves; 0 = the base model's own (all-MiniLM-L6-v2: 256), raised to the training
    # lengths if they are longer. Training truncates at data.query_max_len / data.doc_max_len either way.
    max_seq_len: int = bounded(0, ge=0)
    # RoPE backbones only (gte-modern-base, ModernBERT folders): the rotary base of the global-attention layers, set
    # before training and saved in the export; raise it with data.*_max_len to extend the context (GTE v1.5: 512 ->
    # 8,192). 0 = the backbone's own (gte-modern-base: 160000); an error on a backbone with absolute positions
    rope_theta: float = bounded(0.0, ge=0, hint="0 keeps the backbone's; ModernBERT uses 160000")
    # run the model folder's own Python code (config.json auto_map: a checkpoint transformers has no class for).
    # false refuses such a folder naming the code; true is recorded in the run record and the card, and the export
    # keeps the code files so it loads again (with trust_remote_code=True there too)
    trust_remote_code: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)  # LoRA fine-tuning (model.lora.r > 0)


@dataclass
class DataConfig:
    train_dir: str = ""  # pairs dir holding manifest.json (required)
    sources: list[str] = field(default_factory=list)  # train on these manifest sources only; empty = all
    # tokens per query (special tokens included); longer ones are truncated. Up to the backbone's positions
    # (max_position_embeddings: 512 for BERT, 8,192 for gte-modern-base); more is an error when the model is built
    query_max_len: int = bounded(64, ge=2)
    doc_max_len: int = bounded(128, ge=2)  # tokens per positive / hard negative; the same limit
    # hard negatives per query, drawn from the row's `negatives` list (0 = in-batch only)
    num_negatives: int = bounded(0, ge=0)
    query_prompt: str = ""  # prefix prepended to every query (also written into the export's prompts)
    doc_prompt: str = ""  # prefix prepended to every document
    # instructions per source, {source: {query: "...", document: "..."}}: a role a source leaves out keeps
    # query_prompt / doc_prompt. The export names them <source> and <source>-document (sentence-transformers'
    # prompts), which `gte encode --prompt-name` and `gte eval` (beir/<source>) apply
    prompts: dict[str, dict[str, str]] = field(default_factory=dict)
    # dev rows per source used for validation (0 = no validation): the pairs dir's dev split (gte prep
    # split.dev_fraction), never its held-out test rows; a source without a dev split is not validated
    val_rows: int = bounded(256, ge=0)
    cache_dir: str = ""  # datasets' Arrow cache of the parquet shards; empty = <run.dir>/cache
    # tokenise every train split once into the Arrow cache (reused by later runs with the same tokenizer, prompts
    # and max lengths) instead of every step's texts on the fly; pays when the tokenizer would slow a fast device
    pretokenize: bool = False
    # rows holding fewer negatives than data.num_negatives: false = a config error naming the source; true = their
    # negatives are cycled (the same text repeated as several negatives)
    repeat_negatives: bool = False


@dataclass
class TrainLoopConfig:
    # pairs per optimizer step summed over all processes (the negative pool)
    global_batch_size: int = bounded(64, ge=1)
    chunk_size: int = bounded(64, ge=1)  # texts (queries + documents) per forward pass on one process
    chunk_tokens: int = bounded(0, ge=0)  # token budget per forward pass (0 = chunk_size texts whatever their length)
    # unpadded forward (BERT, RoBERTa, XLM-RoBERTa, MPNet and ModernBERT backbones; others fall back to padded chunks
    # with a notice): no padding tokens, same math; false = padded chunks
    packed: bool = True
    grad_cache: bool = False  # gradient caching: memory of one chunk, any global batch (costs one extra forward)
    max_steps: int = bounded(1000, ge=1)  # optimizer steps in total (a resumed run continues up to this)
    # train this many epochs instead (train.length: ceil(epochs x one pass's steps over every source), read from the
    # pairs dir when training starts, logged and recorded as train.max_steps); 0 = train.max_steps as given
    epochs: float = bounded(0.0, ge=0, hint="e.g. 1 for one pass over the data; 0 uses train.max_steps")
    checkpoint_every: int = bounded(500, ge=0)  # steps between checkpoints (0 = only the final export)
    keep_checkpoints: int = bounded(2, ge=1)  # newest checkpoints kept on disk
    eval_every: int = bounded(500, ge=0)  # steps between validations on the dev rows (0 = only at the end)
    # the export is the model of the evaluated step with the best value of this validation metric (train.best: the
    # highest, the lowest for val_loss; the earlier step on a tie), its checkpoint kept; "" = the last step's model
    best_metric: str = bounded("", choices=BEST_METRICS)
    # stop after this many evaluations in a row without a new best of train.best_metric (0 = never stop early)
    patience: int = bounded(0, ge=0)
    seed: int = 42  # seeds init, dropout, the source/row order and negative sampling
    # fp32, bf16 (autocast) or fp16 (autocast + loss scaling, GPUs)
    precision: str = bounded("fp32", choices=PRECISIONS)
    grad_checkpointing: bool = False  # recompute activations in backward: less memory, one more forward's compute
    log_every: int = bounded(10, ge=1)  # steps between metrics.jsonl/wandb lines (1 logs the data order of every step)
    # steps with a non-finite loss or gradient norm are skipped (no update) and logged; this many in a row stop the
    # run (exit 2, no export) naming the step, the lr and the last good checkpoint
    max_bad_steps: int = bounded(3, ge=1)
    # resume although a checkpoint's RNG state is missing or damaged (dropout then differs from an uninterrupted
    # run); a changed process count always resumes this way, with a notice
    inexact_resume: bool = False
    # read the next step's batch ahead (rows, token ids, chunks) in a background thread while this step computes, so
    # the tokenizer and Arrow reads overlap the device; the same batches in the same order either way. auto = on
    # CUDA devices only: on a 2-core CPU the thread competes with the step's own threads (benchmarks/prefetch_ab.py)
    prefetch: str = bounded("auto", choices=("auto", "on", "off"))
    # torch.compile the encoder forward (GPUs): chunk shapes are bucketed so it compiles a few times, not every step;
    # attention stays eager. Changes float rounding only (like train.chunk_size)
    compile: bool = False
    # round chunk shapes to a few sizes (packed: filler rows up to a multiple of 256 tokens; padded: widths to 64).
    # oneDNN builds and keeps kernels for every new matrix shape: on a CPU in bf16 unbucketed packed chunks add ~11 MB
    # of resident memory per step, bucketed ones none, at the same step time (benchmarks/README.md, "Issue 28").
    # auto = with train.compile, and on a CPU in bf16
    bucket: str = bounded("auto", choices=("auto", "on", "off"))


@dataclass
class OptimConfig:
    lr: float = bounded(2e-5, gt=0, hint="BERT-sized models train at 1e-5 to 1e-4")  # peak learning rate of AdamW
    # AdamW decoupled weight decay (not on biases and LayerNorm weights)
    weight_decay: float = bounded(0.01, ge=0, le=1, hint="AdamW's usual 0.01")
    warmup_steps: int = bounded(100, ge=0)  # linear warmup from 0 to optim.lr
    # after warmup: linear (to 0 at max_steps), cosine (to 0), constant
    schedule: str = bounded("linear", choices=SCHEDULES)
    # gradient clipping by global norm (0 = off)
    max_grad_norm: float = bounded(1.0, ge=0, hint="0 turns clipping off")
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW betas
    eps: float = bounded(1e-8, gt=0, le=1, hint="1e-8")  # AdamW epsilon


@dataclass
class LossConfig:
    # gte (q->d, q->q, d->q, d->d in one partition function) or infonce (q->d)
    kind: str = bounded("gte", choices=LOSSES)
    # softmax temperature on cosine scores; below 1e-3 the logits overflow float32 products into a loss of 1e28 and
    # no gradient signal
    temperature: float = bounded(0.01, ge=1e-3, le=10, hint="GTE uses 0.01, MiniLM 0.05")
    mask_duplicates: bool = True  # a text repeated in the batch is masked, not counted as a negative
    # anchor rows per loss chunk: each chunk's [rows, C] similarity blocks are recomputed in backward, not saved, so
    # the loss holds one chunk, not O(N^2) floats (same loss and gradients); 0 = automatic: chunk only when one
    # full block would exceed train.loss.AUTO_CHUNK_ELEMENTS (1 GiB fp32; GTE, K=0, one process: above 8,192 pairs)
    row_chunk: int = bounded(0, ge=0)
    # Matryoshka: the loss summed over embeddings truncated to these leading dims (each renormalised), e.g.
    # [384,256,128,64]; [] = the full dim only. The export records them (sentence-transformers' truncate_dim works).
    matryoshka_dims: list[int] = field(default_factory=list)
    matryoshka_weights: list[float] = field(default_factory=list)  # one per dim; [] = 1 each
    # distillation from the teacher (section `teacher`): + weight * KL(teacher || student) over each query's
    # candidates, both softmaxes at distill_temperature; candidates = its positive and hard negatives, or every
    # document of the batch with distill_in_batch=true. 0 = off.
    distill_weight: float = bounded(0.0, ge=0, hint="0 turns it off; 0.5-2 are usual")
    distill_temperature: float = bounded(0.05, ge=1e-3, le=10, hint="0.02-0.1")  # of both softmaxes of the KL
    distill_in_batch: bool = False  # distil over every document of the batch, not just the row's own
    # kl: match the teacher's softmax over the candidates; margin_mse: match its score margins positive - candidate
    # (GPL's MarginMSE, in logits at distill_temperature), averaged over the candidates
    distill: str = bounded("kl", choices=DISTILL_KINDS)
    # GISTEmbed guided masking: in-batch candidates the teacher scores above its score of the positive minus
    # guide_margin are dropped from the denominator (likely false negatives); < 0 = off
    guide_margin: float = -1.0

    @property
    def uses_teacher(self) -> bool:
        """Whether the loss needs teacher vectors: it distils from them or masks by them."""
        return self.distill_weight > 0 or self.guide_margin >= 0


@dataclass
class SamplerConfig:
    # source mixing p_i ~ n_i^alpha (0 uniform, 1 proportional to size); one source per batch
    alpha: float = bounded(GTE_ALPHA, ge=0, le=1, hint="0 uniform, 0.5 GTE, 1 proportional to size")


@dataclass
class LogConfig:
    wandb: str = bounded("auto", choices=WANDB_MODES)  # auto (when installed; offline without WANDB_API_KEY), on, off
    project: str = "gte-train"  # wandb project; the experiment / project name of every report_to tracker
    # more trackers beside metrics.jsonl (always the record) and wandb (log.wandb), through accelerate's trackers:
    # tensorboard, mlflow, comet_ml, aim, clearml, dvclive, swanlab, trackio; files under <run.dir>/trackers
    report_to: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    # the teacher of loss.distill_weight and loss.guide_margin; its vectors are cached in teacher.cache_dir
    # ("" = <run.dir>/teacher_cache; `gte run` points it at the mining cache, which already holds them)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)

    def validate(self, world_size: int | None = None, zero_stage: int | None = None) -> list[str]:
        """Every problem, in override spelling; changes nothing. world_size / zero_stage default to what the
        launcher (accelerate launch, torchrun) put in the environment."""
        world_size = launch_world_size() if world_size is None else world_size
        zero_stage = launch_zero_stage() if zero_stage is None else zero_stage
        return field_problems(self) + _check_fields(self) + _check_batch(self, world_size, zero_stage)


def _check_prompts(d: DataConfig) -> list[str]:
    """data.prompts: roles are query and document; with data.sources set, only those sources."""
    errors = []
    for source, roles in d.prompts.items():
        bad = sorted(set(roles) - {"query", "document"})
        if bad:
            errors.append(f"data.prompts.{source}: roles {bad} are not query or document; e.g. "
                          f"data.prompts.{source}.query='Represent this question: '")
        if d.sources and source not in d.sources:
            errors.append(f"data.prompts.{source}: not one of data.sources={list(d.sources)}; drop it or add the "
                          "source")
    return errors


def _check_fields(c: TrainConfig) -> list[str]:
    """The rules a field's Bounds cannot state: a required path, a key that needs another, list contents."""
    errors = _check_prompts(c.data)
    if not c.data.train_dir:
        errors.append("data.train_dir is not set: point it at a pairs dir with manifest.json (data.train_dir=...)")
    if c.loss.uses_teacher and not c.teacher.model:
        errors.append(f"loss.distill_weight={c.loss.distill_weight}, loss.guide_margin={c.loss.guide_margin}: need "
                      "a teacher; set teacher.model=all-mpnet-base-v2 (or a model folder)")
    if c.teacher.kind == "cross":  # a cross-encoder scores each query's own candidates, and has no vectors
        if c.loss.distill_in_batch:
            errors.append("loss.distill_in_batch=true with teacher.kind=cross: a cross-encoder scores only each "
                          "query's own candidates, not every document of the batch; set loss.distill_in_batch=false")
        if c.loss.guide_margin >= 0:
            errors.append(f"loss.guide_margin={c.loss.guide_margin} with teacher.kind=cross: guided masking needs "
                          "teacher vectors; set loss.guide_margin=-1 or teacher.kind=bi")
    if len(c.optim.betas) != 2 or not all(0 <= b < 1 for b in c.optim.betas):
        errors.append(f"optim.betas={list(c.optim.betas)}: must be two numbers in [0, 1), e.g. [0.9,0.999]")
    if c.train.best_metric and not (c.data.val_rows and c.train.eval_every):
        errors.append(f"train.best_metric={c.train.best_metric}: needs validations; set data.val_rows and "
                      "train.eval_every above 0 (and a pairs dir with a dev split: gte prep split.dev_fraction)")
    if c.train.patience and not c.train.best_metric:
        errors.append(f"train.patience={c.train.patience}: counts evaluations without a new best of "
                      "train.best_metric, which is not set; e.g. train.best_metric=val_ndcg@10")
    if not c.train.epochs:  # with train.epochs the steps are known once training reads its data (train.length)
        errors += length_problems(c)
    return errors + _check_matryoshka(c.loss) + _check_extras(c)


def length_problems(c: TrainConfig, total: str = "") -> list[str]:
    """optim.warmup_steps against the run's train.max_steps; total: how that count was set (train.length), if not
    by the key itself."""
    if c.optim.warmup_steps <= c.train.max_steps:
        return []
    total = total or f"train.max_steps={c.train.max_steps}"
    return [f"optim.warmup_steps={c.optim.warmup_steps} exceeds {total}: the learning rate would never reach "
            "optim.lr; lower optim.warmup_steps"]


def _check_extras(c: TrainConfig) -> list[str]:
    """Optional packages the config needs, reported with every other problem (gte run: before its first phase, not
    when stage 2 starts); looked up, not imported."""
    from train.metrics import missing_wandb, tracker_problems

    problems = [missing_wandb(c.log.wandb), *tracker_problems(c.log.report_to)]
    if c.model.lora.r:
        from gte_model.lora import missing_peft  # imports torch: only for a config that trains with LoRA

        problems.append(missing_peft(c.model.lora.r))
    return [p for p in problems if p]


def _check_matryoshka(loss: LossConfig) -> list[str]:
    dims, weights = list(loss.matryoshka_dims), list(loss.matryoshka_weights)
    errors = []
    if any(d < 1 for d in dims) or len(set(dims)) != len(dims):
        errors.append(f"loss.matryoshka_dims={dims}: must be distinct dims >= 1, e.g. [384,256,128,64]")
    if weights and len(weights) != len(dims):
        errors.append(f"loss.matryoshka_weights={weights}: needs one weight per dim of loss.matryoshka_dims={dims}")
    if any(not (w >= 0 and math.isfinite(w)) for w in weights):
        errors.append(f"loss.matryoshka_weights={weights}: must be finite and >= 0")
    return errors


def _check_batch(c: TrainConfig, world_size: int, zero_stage: int) -> list[str]:
    errors = []
    t = c.train
    if t.global_batch_size % world_size:
        errors.append(
            f"train.global_batch_size={t.global_batch_size} is not divisible by the {world_size} processes: every "
            f"process encodes an equal share; use a multiple of {world_size}"
        )
    if uses_grad_cache(c, world_size) and zero_stage >= 2:
        errors.append(
            f"train.grad_cache=true with DeepSpeed ZeRO stage {zero_stage}: ZeRO>=2 partitions and reduces "
            "gradients inside every backward call, which the cache's per-chunk backward breaks; launch with "
            "configs/accelerate/deepspeed_zero1.yaml or ddp.yaml to keep the cache, or set train.grad_cache=false"
        )
    if zero_stage >= 3:
        errors.append(
            f"DeepSpeed ZeRO stage {zero_stage}: parameters are partitioned, which the export path does not "
            "gather; launch with configs/accelerate/deepspeed_zero2.yaml (or zero1/ddp)"
        )
    return errors


def texts_per_process(c: TrainConfig, world_size: int) -> int:
    """Texts one process encodes per step: its share of the batch's queries, positives and hard negatives."""
    return (c.train.global_batch_size // world_size) * (2 + c.data.num_negatives)


def uses_grad_cache(c: TrainConfig, world_size: int) -> bool:
    """train.grad_cache, unless one chunk holds every text a process encodes per step (train.chunk_size at least
    that many, no train.chunk_tokens budget): the cache would then only add a forward pass, with the same loss and
    gradients. A smaller batch thus never needs a smaller chunk_size (grad_cache_notice says so at start)."""
    t = c.train
    return t.grad_cache and (t.chunk_tokens > 0 or t.chunk_size < texts_per_process(c, world_size))


def grad_cache_notice(c: TrainConfig, world_size: int) -> str | None:
    """One line when train.grad_cache=true is not used (uses_grad_cache); None otherwise."""
    if not c.train.grad_cache or uses_grad_cache(c, world_size):
        return None
    n = texts_per_process(c, world_size)
    return (f"train.chunk_size={c.train.chunk_size} clamped to the {n} texts one process encodes per step "
            f"(train.global_batch_size={c.train.global_batch_size} / {world_size} process(es) x (2 + "
            f"data.num_negatives={c.data.num_negatives})): one chunk holds them all, so the step runs without the "
            "gradient cache (same loss and gradients, one forward pass fewer)")


def launch_world_size() -> int:
    """Process count announced by the launcher (accelerate launch / torchrun set WORLD_SIZE); 1 otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launched_with_deepspeed() -> bool:
    """Whether `accelerate launch` announced DeepSpeed (the one reading of ACCELERATE_USE_DEEPSPEED)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def launch_zero_stage() -> int:
    """DeepSpeed ZeRO stage announced by `accelerate launch` (0 when DeepSpeed is not used)."""
    if not launched_with_deepspeed():
        return 0
    config_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none")
    if config_file not in ("", "none") and os.path.isfile(config_file):
        import json

        with open(config_file) as fh:
            return int(json.load(fh).get("zero_optimization", {}).get("stage", 0))
    return int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))
