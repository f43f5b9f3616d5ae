"""The plain (uncached) training step and the chunking both steps share.

`make_chunks` sorts a batch's texts by token length and cuts them into chunks padded only to their own longest
row: the same math as one padded forward, with most of the padding gone (padding is the largest waste of a
naive contrastive step). `plain_step` has the calling convention of train.grad_cache.cached_step, so the loop
picks one of the two once, before it starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from gte_model import collate

Chunk = dict[str, Tensor]


def make_chunks(ids: Sequence[Sequence[int]], chunk_size: int, pad_id: int) -> tuple[list[Chunk], Tensor]:
    """Token id lists -> (chunks, order): chunks of at most chunk_size texts, longest first, each padded to its
    own longest row; order [M] (long) with order[k] = the original index of row k of the chunk-concatenated
    embeddings. Un-permute with emb_original = emb_concat[torch.argsort(order)] (or emb_original[order] =
    emb_concat)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1 (texts per forward pass)")
    # Longest first (stable for ties): a chunk too long for memory fails on the first forward, not the last.
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    chunks = [collate([ids[i] for i in order[s : s + chunk_size]], pad_id) for s in range(0, len(order), chunk_size)]
    return chunks, torch.tensor(order, dtype=torch.long)


def plain_step(
    encode: Callable[[Chunk], Tensor],
    chunks: list[Chunk],
    loss_fn: Callable[[Tensor], Tensor],
    *,
    backward: Callable[[Tensor], None] = lambda t: t.backward(),
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Tensor:
    """Forward every chunk with grad (activations of all chunks held at once), loss on the float32
    concatenation [M, H], one backward(loss). Returns the detached loss."""
    with autocast():
        embs = [encode(chunk) for chunk in chunks]  # each [c, H]
    loss = loss_fn(torch.cat([e.float() for e in embs]))  # [M, H] -> scalar
    backward(loss)
    return loss.detach()
