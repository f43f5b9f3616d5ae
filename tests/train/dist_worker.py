"""One rank of the 2-process gradient-parity test (tests/train/test_distributed.py launches it):

    accelerate launch --multi_gpu --num_processes 2 tests/train/dist_worker.py OUT_DIR MODEL_DIR  (with
    Accelerator(cpu=True) this is DDP on gloo; `--cpu` alone would start a single process)

Each rank takes its half of a fixed global batch (queries, positives, 2 hard negatives each), embeds it through
the tiny BERT wrapped by accelerate (DDP on gloo), gathers every column separately with gradient, computes the loss
over its own rows against all gathered candidates with the loop's own loss factory (train.objective) and
backpropagates, the loop's way (accelerator.backward,
accelerator.no_sync). It saves the (DDP-averaged) gradients to OUT_DIR/rank{r}.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from tests.conftest import make_tiny_model  # noqa: E402
from train.batch import Batch  # noqa: E402
from train.config import LossConfig  # noqa: E402
from train.distributed import all_reduce_mean, local_rows, world  # noqa: E402
from train.grad_cache import cached_step  # noqa: E402
from train.objective import make_loss_fn  # noqa: E402
from train.step import make_chunks, plain_step  # noqa: E402

QUERIES = ["the cat plays piano", "stock price fell", "python package file", "a red dog runs"]
# Rank 1's first positive repeats rank 0's first: a duplicate that only the gathered hashes can reveal.
DOCS = ["a cat playing the piano", "the market fell on the news today", "a cat playing the piano", "the red dog"]
NEGS = [["a dog plays guitar", "music"], ["the stock rose", "a report"], ["a data text", "red"], ["green", "a man"]]
# "teacher": the GTE loss + distillation over in-batch candidates + guided masking + Matryoshka dims [32, 16]
# "cross": the GTE loss + MarginMSE from a cross-encoder's scores of each query's own candidates
MODES = [("gte", "plain"), ("infonce", "plain"), ("gte", "cached"), ("teacher", "plain"), ("teacher", "cached"),
         ("cross", "cached")]


def local_batch(rows: slice) -> Batch:
    """This rank's rows of the fixed global batch."""
    return Batch("toy", list(range(len(QUERIES)))[rows], QUERIES[rows], DOCS[rows], [list(n) for n in NEGS[rows]])


def loss_config(kind: str) -> LossConfig:
    if kind == "teacher":
        return LossConfig(kind="gte", temperature=0.05, mask_duplicates=True, distill_weight=0.7,
                          distill_temperature=0.1, distill_in_batch=True, guide_margin=0.3, matryoshka_dims=[32, 16],
                          matryoshka_weights=[1.0, 0.5])
    if kind == "cross":
        return LossConfig(kind="gte", temperature=0.05, mask_duplicates=True, distill_weight=0.7,
                          distill_temperature=0.1, distill="margin_mse")
    return LossConfig(kind=kind, temperature=0.05, mask_duplicates=True)


def teacher_vectors(batch: Batch, kind: str) -> tuple | torch.Tensor | None:
    """Fixed 8-dim "teacher" vectors, a function of each text (so every rank and the reference agree); for "cross",
    scores [b, 1+K], a function of each (query, document) pair."""
    if kind == "cross":
        def score(q: str, d: str) -> float:
            return (sum(map(ord, q)) * 31 + sum(map(ord, d))) % 97 / 97

        return torch.tensor([[score(q, d) for d in [p, *negs]] for q, p, negs in
                             zip(batch.queries, batch.positives, batch.negatives)])
    if kind != "teacher":
        return None

    def vec(text: str) -> torch.Tensor:
        return torch.randn(8, generator=torch.Generator().manual_seed(sum(map(ord, text)) * 7919 + len(text)))

    neg = torch.stack([torch.stack([vec(t) for t in row]) for row in batch.negatives])  # [b, K, 8]
    return torch.stack([vec(t) for t in batch.queries]), torch.stack([vec(t) for t in batch.positives]), neg


def main(out_dir: str, model_dir: str) -> None:
    accelerator = Accelerator(cpu=True)
    rank, size = world()
    assert size == 2, f"expected 2 processes, got {size}"
    model = make_tiny_model(model_dir, seed=0).eval()  # dropout off: ranks and the reference must agree exactly
    # GTEModel freezes BERT's unused pooler, so DDP (find_unused_parameters=False) waits for no missing gradient.
    ddp = accelerator.prepare(model)
    b = len(QUERIES) // size
    batch = local_batch(local_rows(b))
    texts = batch.queries + batch.documents()
    results = {}
    for kind, step in MODES:
        chunk_size = len(texts) if step == "plain" else 3  # plain: one forward (DDP wants one per backward)
        chunks, order = make_chunks(model.tokenize_ids(texts), chunk_size, model.tokenizer.pad_token_id)
        model.zero_grad(set_to_none=True)
        # the loop's own loss factory
        loss_fn = make_loss_fn(batch, order, loss_config(kind), "cpu", teacher_vectors(batch, kind))
        kwargs = {"no_sync": lambda: accelerator.no_sync(ddp)} if step == "cached" else {}
        fn = cached_step if step == "cached" else plain_step
        loss = fn(lambda c: ddp(**c), chunks, loss_fn, backward=accelerator.backward, **kwargs)
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[f"{kind}-{step}"] = (all_reduce_mean(loss), grads, len(chunks))
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
