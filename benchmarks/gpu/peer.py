"""The peer of benchmarks/gpu/bench.py: sentence-transformers' SentenceTransformerTrainer +
MultipleNegativesRankingLoss(scale 20 = 1 / temperature 0.05) on the same pairs, from the same weights, bf16, at its
best documented settings (benchmarks/peer_settings.py): padding-free with flash-attention where a flash-attention
varlen kernel loads, else sdpa (padded). The result names what it got.

Timed like ours: a few warm-up steps, then steps until a time budget is spent (a callback stops the trainer); the
window runs from the end of the last warm-up step to the end of the last step. Tokens are counted from the attention
masks (padded) or cumulative lengths (flattened) its collator builds, with the sum of squared lengths for the
attention FLOPs.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.peer_settings import load_peer, real_lengths


class _CountingCollator:
    """The trainer's collator (it tokenises), recording (tokens, sum of squared lengths) of every batch."""

    def __init__(self, collate) -> None:
        self.collate, self.counts = collate, []

    def __call__(self, features):
        batch = self.collate(features)
        lengths = real_lengths(batch)
        self.counts.append((sum(int(n.sum()) for n in lengths), sum(int((n * n).sum()) for n in lengths)))
        return batch

    def __getattr__(self, name: str):
        return getattr(self.collate, name)


def run_st(folder: Path, dataset, *, max_len: int, batch: int, warmup: int, seconds: float, device: str,
           out_dir: Path, lr: float, temperature: float) -> dict:
    """Train until `seconds` after `warmup` steps; returns steps, seconds, pairs/s, tokens, squared lengths and the
    peer's settings (attention, padding_free, fallback)."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback, set_seed

    set_seed(0)
    model, settings = load_peer(folder, device)
    model.max_seq_length = max_len
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=batch, max_steps=1_000_000, learning_rate=lr,
        weight_decay=0.01, warmup_steps=0, lr_scheduler_type="constant", max_grad_norm=1.0, bf16=True,
        use_cpu=device == "cpu", report_to="none", save_strategy="no", eval_strategy="no", logging_strategy="no",
        dataloader_drop_last=True, disable_tqdm=True, seed=0,
    )
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())
            if len(stamps) > warmup + 1 and stamps[-1] - stamps[warmup] >= seconds:
                control.should_training_stop = True

    loss = MultipleNegativesRankingLoss(model, scale=1.0 / temperature)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss,
                                         callbacks=[Clock()])
    trainer.data_collator = counter = _CountingCollator(trainer.data_collator)
    trainer.train()
    steps = len(stamps) - 1 - warmup
    window = stamps[-1] - stamps[warmup]
    timed = counter.counts[warmup : warmup + steps]  # the collator runs once per step, in order
    return {"steps": steps, "seconds": window, "pairs_per_s": steps * batch / window,
            "tokens": sum(t for t, _ in timed), "squares": sum(s for _, s in timed), "peer": settings}
