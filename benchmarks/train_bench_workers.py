"""Workers of benchmarks/train_throughput.py: the real Debian pairs, and one training run per process.

Each worker runs in its own process (so ru_maxrss is that configuration's own peak), trains `warmup + steps`
optimizer steps and returns a dict: wall time of the timed steps (from the end of the last warm-up step to the end
of the last step: data fetch, tokenisation, forward, loss, backward, clipping, AdamW and schedule all inside),
non-padding tokens of those steps, peak RSS, and RSS before the first step.

  ours: train.trainer.Trainer(TrainConfig) + Trainer.step(step) -- the product's own step, reading a
        pairs dir (manifest + parquet) through train.data.PairsData and train.sampler.SourceBatchSampler.
  peer: sentence-transformers' SentenceTransformerTrainer + MultipleNegativesRankingLoss(scale=20) on a
        datasets.Dataset with columns anchor/positive holding the same rows.
"""

from __future__ import annotations

import os
import random
import resource
import time
from pathlib import Path

from benchmarks.peer_settings import real_lengths

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SOURCE = "debian"
LR = 2e-5
WEIGHT_DECAY = 0.01  # both exclude biases and LayerNorm weights from decay
TEMPERATURE = 0.05  # MNRL's default scale 20 = 1 / 0.05


# ---- data ------------------------------------------------------------------------------------------------------
def debian_rows(seed: int = 0) -> list[dict]:
    """Debian (short description -> long description) pairs, deduplicated on the long text, shuffled by seed."""
    from data_prep.sources.debian import iter_debian

    by_long: dict[str, dict] = {}
    for row in iter_debian():
        by_long.setdefault(row["positive"], row)
    rows = list(by_long.values())
    random.Random(seed).shuffle(rows)
    return rows


def write_pairs_dir(rows: list[dict], folder: Path) -> Path:
    """A one-source pairs dir (gte-pairs/1) holding `rows` as its train split, in this order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gte_model.core.pairs import finish
    from gte_model.core.record import Record

    (folder / SOURCE).mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "query": [r["query"] for r in rows],
            "positive": [r["positive"] for r in rows],
            "negatives": pa.array([[] for _ in rows], type=pa.list_(pa.string())),
            "source": [SOURCE] * len(rows),
            "key": [r["key"] for r in rows],
        }
    )
    shard = f"{SOURCE}/train-00000.parquet"
    pq.write_table(table, folder / shard)
    sources = {SOURCE: {"train": {"files": [shard], "rows": len(rows)}, "heldout": {"files": [], "rows": 0}}}
    finish(folder, sources, {}, Record("prep", 0, {"benchmark.rows": len(rows)}))
    return folder


def peer_dataset(pairs_dir: Path):
    """The pairs dir's train rows as a datasets.Dataset with columns anchor, positive (same rows, same order)."""
    import datasets
    import pyarrow.parquet as pq

    table = pq.read_table(pairs_dir / SOURCE / "train-00000.parquet", columns=["query", "positive"])
    columns = {"anchor": table["query"].to_pylist(), "positive": table["positive"].to_pylist()}
    return datasets.Dataset.from_dict(columns)


# ---- measurement helpers ---------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rss_now_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _result(stamps: list[float], tokens: list[int], warmup: int, pairs_per_step: int, rss_before: float) -> dict:
    """stamps[0] = start of training, stamps[k + 1] = end of step k; tokens[k] = non-padding tokens of step k.
    The timed window runs from the end of the last warm-up step to the end of the last step."""
    timed = len(stamps) - 1 - warmup
    seconds = stamps[-1] - stamps[warmup]
    step_tokens = tokens[warmup : warmup + timed]
    return {
        "steps": timed,
        "seconds": seconds,
        "pairs_per_s": timed * pairs_per_step / seconds,
        "tokens_per_s": sum(step_tokens) / seconds,
        "tokens_per_step": sum(step_tokens) / max(1, timed),
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_train_mb": rss_before,
    }


# ---- ours ------------------------------------------------------------------------------------------------------
def ours_config(spec: dict):
    """The TrainConfig of one benchmark run: MiniLM, InfoNCE at 0.05, no hard negatives, no eval/checkpoints."""
    from gte_model.core.config import load_config
    from train.config import TrainConfig

    return load_config(TrainConfig, None, ours_overrides(spec))


def ours_overrides(spec: dict) -> list[str]:
    """The `key=value` list of one benchmark run (ours_config's, and `gte train`'s in the whole-process runs)."""
    total = spec["warmup"] + spec["steps"]
    return [
        f"run.dir={spec['run_dir']}",
        "model.init_from=all-MiniLM-L6-v2",
        f"data.train_dir={spec['pairs_dir']}",
        f"data.cache_dir={spec['cache_dir']}",
        f"data.query_max_len={spec['max_len']}",
        f"data.doc_max_len={spec['max_len']}",
        "data.num_negatives=0",
        "data.val_rows=0",
        f"train.global_batch_size={spec['batch']}",
        f"train.chunk_size={spec['chunk_size']}",
        f"train.chunk_tokens={spec.get('chunk_tokens', 0)}",
        f"train.packed={str(spec.get('packed', True)).lower()}",
        f"train.grad_cache={str(spec.get('grad_cache', False)).lower()}",
        f"train.max_steps={total}",
        "train.checkpoint_every=0",
        "train.eval_every=0",
        f"train.precision={spec['precision']}",
        f"train.seed={spec.get('seed', 42)}",
        f"optim.lr={LR}",
        f"optim.weight_decay={WEIGHT_DECAY}",
        "optim.warmup_steps=0",
        "loss.kind=infonce",
        f"loss.temperature={TEMPERATURE}",
        "loss.mask_duplicates=false",  # MNRL does not mask duplicates: same loss semantics
        "log.wandb=off",
    ]


def run_ours(spec: dict) -> dict:
    import contextlib
    import io

    from train.trainer import Trainer

    cfg = ours_config(spec)
    with contextlib.redirect_stdout(io.StringIO()):  # building prints notices
        trainer = Trainer(cfg)
    rss_before = rss_now_mb()
    if spec.get("probe_chunks"):
        return _probe_cached(trainer, spec["probe_chunks"], rss_before)
    stamps, tokens = [time.perf_counter()], []
    for step in range(cfg.train.max_steps):
        stats = trainer.step(step)  # its loss is a float: the step has finished on any device
        stamps.append(time.perf_counter())
        tokens.append(stats.tokens)
    out = _result(stamps, tokens, spec["warmup"], spec["batch"], rss_before)
    out["last_loss"] = stats.loss
    return out


class _ProbeStop(Exception):
    pass


def _probe_cached(trainer, chunks: int, rss_before: float) -> dict:
    """Peak RSS of one cached step cut short after `chunks` phase-3 chunk backwards: phase 1 (every chunk without
    grad), phase 2 (the loss over the whole batch) and the first re-forwards with grad have all run, which is where
    the memory peaks; the remaining chunks repeat the same per-chunk work. Used where a full step costs too long."""
    import functools

    done = []
    backward = trainer.updater.backward

    def counting(surrogate):
        backward(surrogate)
        done.append(1)
        if len(done) >= chunks:
            raise _ProbeStop

    trainer.step_fn = functools.partial(trainer.step_fn, backward=counting)
    started = time.perf_counter()
    try:
        trainer.step(0)
    except _ProbeStop:
        pass
    return {"steps": 0, "seconds": time.perf_counter() - started, "pairs_per_s": float("nan"),
            "tokens_per_s": float("nan"), "tokens_per_step": float("nan"), "peak_rss_mb": peak_rss_mb(),
            "rss_before_train_mb": rss_before, "probe_chunks": chunks}


# ---- peer ------------------------------------------------------------------------------------------------------
def run_peer(spec: dict) -> dict:
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback, set_seed

    from benchmarks.peer_settings import load_peer
    from gte_model.load import packaged_model_path

    set_seed(spec.get("seed", 42))
    model, peer = load_peer(packaged_model_path(), "cpu")  # its best documented CPU settings: sdpa, bf16, fused
    model.max_seq_length = spec["max_len"]
    dataset = peer_dataset(Path(spec["pairs_dir"]))
    total = spec["warmup"] + spec["steps"]
    args = SentenceTransformerTrainingArguments(
        output_dir=spec["run_dir"],
        per_device_train_batch_size=spec["batch"],
        max_steps=total,
        learning_rate=LR,
        weight_decay=WEIGHT_DECAY,
        warmup_steps=0,
        max_grad_norm=1.0,
        bf16=spec["precision"] == "bf16",
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        dataloader_drop_last=True,
        disable_tqdm=True,
        seed=spec.get("seed", 42),
    )
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_train_begin(self, *a, **k):
            stamps.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    loss = MultipleNegativesRankingLoss(model, scale=1.0 / TEMPERATURE)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss,
                                         callbacks=[Stamp()])
    tokens = _count_tokens(trainer)
    rss_before = rss_now_mb()
    result = trainer.train()
    out = _result(stamps, tokens, spec["warmup"], spec["batch"], rss_before)
    out["last_loss"] = float(result.training_loss)  # mean over all steps (the peer keeps no per-step loss here)
    out["optim"] = str(args.optim)
    out["peer"] = peer
    return out


class _CountingCollator:
    """The trainer's collator (it tokenises), recording the non-padding tokens of every batch in order; other
    attributes (valid_label_columns, ...) are the wrapped collator's."""

    def __init__(self, collate) -> None:
        self.collate = collate
        self.counts: list[int] = []

    def __call__(self, features):
        batch = self.collate(features)
        self.counts.append(int(sum(n.sum() for n in real_lengths(batch))))
        return batch

    def __getattr__(self, name: str):
        return getattr(self.collate, name)


def _count_tokens(trainer) -> list[int]:
    trainer.data_collator = _CountingCollator(trainer.data_collator)
    return trainer.data_collator.counts


WORKERS = {"ours": run_ours, "ours-padded": run_ours, "peer": run_peer}
