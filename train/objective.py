"""The loss of one step as the loop computes it: chunk-ordered embeddings -> this process's loss over its rows
against every process's candidates. The 2-process parity test calls this same factory."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from train.batch import Batch
from train.config import LossConfig
from train.distributed import gather_nograd, gather_with_grad, local_rows
from train.loss import Teacher, contrastive_loss


def gathered_hashes(batch: Batch, loss: LossConfig, device: torch.device | str) -> dict[str, Tensor]:
    """Every process's text hashes for duplicate masking ({} when loss.mask_duplicates is off)."""
    if not loss.mask_duplicates:
        return {}
    return {k: gather_nograd(v.to(device)) for k, v in batch.hashes().items()}  # [W*b(, K)]


def make_loss_fn(
    batch: Batch, order: Tensor, loss: LossConfig, device: torch.device | str,
    teacher_vectors: tuple[Tensor, Tensor, Tensor | None] | Tensor | None = None,
) -> Callable:
    """order: the chunking permutation (train.step.make_chunks); teacher_vectors: this process's teacher vectors
    (train.teacher.TeacherVectors) or scores [b, 1+K] (train.teacher.TeacherScores) when the loss distils or
    guides. Returns emb [M, H] (chunk order) -> scalar:
    the contrastive loss, summed over loss.matryoshka_dims (weighted) when set."""
    inverse = torch.argsort(order)
    hashes = gathered_hashes(batch, loss, device)
    teacher = _gathered_teacher(teacher_vectors, loss, device)
    dims = list(loss.matryoshka_dims) or [None]  # None: the full dim
    weights = list(loss.matryoshka_weights) or [1.0] * len(dims)

    def loss_fn(emb: Tensor) -> Tensor:
        q, d, neg = batch.split(emb[inverse.to(emb.device)])  # back in flat order
        q, d = gather_with_grad(q), gather_with_grad(d)  # [W*b, H]; each column on its own: row i stays one pair
        neg = gather_with_grad(neg) if neg is not None else None  # [W*b, K, H]
        return sum(w * contrastive_loss(
            q[:, :dim], d[:, :dim], neg[..., :dim] if neg is not None else None, kind=loss.kind,
            temperature=loss.temperature, rows=local_rows(batch.size), row_chunk=loss.row_chunk, teacher=teacher,
            **hashes,
        ) for dim, w in zip(dims, weights))

    return loss_fn


def _gathered_teacher(vectors, loss: LossConfig, device) -> Teacher | None:
    """Every process's teacher vectors, or scores [W*b, 1+K] (constants), with the loss's distillation and guide
    settings."""
    if vectors is None or not loss.uses_teacher:
        return None
    if isinstance(vectors, Tensor):  # a cross-encoder's scores
        q = d = neg = None
        scores = gather_nograd(vectors.to(device))  # [W*b, 1+K]
    else:
        q, d, neg = (gather_nograd(v.to(device)) if v is not None else None for v in vectors)
        scores = None
    return Teacher(q, d, neg, guide_margin=loss.guide_margin if loss.guide_margin >= 0 else None,
                   distill_weight=loss.distill_weight, distill_temperature=loss.distill_temperature,
                   distill_in_batch=loss.distill_in_batch, distill_kind=loss.distill, scores=scores)


@torch.no_grad()
def validation_scores(batch: Batch, emb: Tensor, loss: LossConfig) -> tuple[float, float, float]:
    """(loss, in-batch top-1 accuracy, in-batch nDCG@10) of validation (dev) rows with in-batch negatives only; emb
    in flat order [2b, H]. nDCG@10 with one relevant document: 1 / log2(1 + rank) of the row's own positive among
    the batch's positives when its rank is at most 10 (ties count against it), else 0."""
    q, d, _ = batch.split(emb)
    q, d = gather_nograd(q), gather_nograd(d)  # [W*b, H]
    value = contrastive_loss(q, d, None, kind=loss.kind, temperature=loss.temperature, row_chunk=loss.row_chunk,
                             **gathered_hashes(batch, loss, emb.device)).item()
    scores = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(d, dim=-1).T  # [N, N]
    accuracy = (scores.argmax(dim=1) == torch.arange(len(q), device=q.device)).float().mean().item()
    rank = 1 + (scores > scores.diagonal()[:, None]).sum(dim=1)  # [N]
    ndcg = torch.where(rank <= 10, 1 / torch.log2(1.0 + rank.double()), 0.0).mean().item()
    return value, accuracy, ndcg
