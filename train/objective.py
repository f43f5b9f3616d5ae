"""The loss of one step as the loop computes it: chunk-ordered embeddings -> this process's loss over its rows
against every process's candidates. The 2-process parity test calls this same factory."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from train.batch import Batch
from train.config import LossConfig
from train.distributed import gather_nograd, gather_with_grad, local_rows
from train.loss import contrastive_loss


def gathered_hashes(batch: Batch, loss: LossConfig, device: torch.device | str) -> dict[str, Tensor]:
    """Every process's text hashes for duplicate masking ({} when loss.mask_duplicates is off)."""
    if not loss.mask_duplicates:
        return {}
    return {k: gather_nograd(v.to(device)) for k, v in batch.hashes().items()}  # [W*b(, K)]


def make_loss_fn(batch: Batch, order: Tensor, loss: LossConfig, device: torch.device | str) -> Callable:
    """order: the chunking permutation (train.step.make_chunks). Returns emb [M, H] (chunk order) -> scalar."""
    inverse = torch.argsort(order)
    hashes = gathered_hashes(batch, loss, device)

    def loss_fn(emb: Tensor) -> Tensor:
        q, d, neg = batch.split(emb[inverse.to(emb.device)])  # back in flat order
        q, d = gather_with_grad(q), gather_with_grad(d)  # [W*b, H]; each column on its own: row i stays one pair
        neg = gather_with_grad(neg) if neg is not None else None  # [W*b, K, H]
        return contrastive_loss(
            q, d, neg, kind=loss.kind, temperature=loss.temperature, rows=local_rows(batch.size),
            row_chunk=loss.row_chunk, **hashes,
        )

    return loss_fn


@torch.no_grad()
def validation_scores(batch: Batch, emb: Tensor, loss: LossConfig) -> tuple[float, float]:
    """(loss, in-batch top-1 accuracy) of held-out rows with in-batch negatives only; emb in flat order [2b, H]."""
    q, d, _ = batch.split(emb)
    q, d = gather_nograd(q), gather_nograd(d)  # [W*b, H]
    value = contrastive_loss(q, d, None, kind=loss.kind, temperature=loss.temperature, row_chunk=loss.row_chunk,
                             **gathered_hashes(batch, loss, emb.device)).item()
    scores = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(d, dim=-1).T  # [N, N]
    accuracy = (scores.argmax(dim=1) == torch.arange(len(q), device=q.device)).float().mean().item()
    return value, accuracy
