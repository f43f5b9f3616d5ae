"""The plain (uncached) training step and the chunking both steps share.

`make_chunks` sorts a batch's texts by token length and cuts them into chunks: packed (no padding at all, see
gte_model.packed) or padded only to their own longest row. Either is the same math as one padded forward, with
the padding gone (padding is the largest waste of a naive contrastive step). `plain_step` has the calling
convention of train.grad_cache.cached_step, so the loop picks one of the two once, before it starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from gte_model import Packed, collate, pack
from gte_model.packed import round_up

Chunk = dict[str, Tensor]


# Chunk widths are rounded up to this many tokens: a handful of distinct (rows, width) shapes per run instead of
# one per chunk. On CPUs oneDNN builds kernels per new shape (in bf16 a new shape cost ~2.5x a seen one, measured in
# benchmarks/train_profile.py); on GPUs round widths suit tensor cores. The cost is < 16 padding tokens per row.
PAD_MULTIPLE = 16


def make_chunks(
    ids: Sequence[Sequence[int]],
    chunk_size: int,
    pad_id: int,
    max_tokens: int = 0,
    pad_multiple: int = PAD_MULTIPLE,
    packed: bool = False,
) -> tuple[list[Chunk | Packed], Tensor]:
    """Token id lists -> (chunks, order): longest first, at most chunk_size texts per chunk and, when max_tokens > 0,
    at most max_tokens tokens (short texts then go in bigger chunks, long ones in smaller). A chunk is padded tensors
    (each chunk padded to its own longest row rounded up to pad_multiple) or, with packed=True, a gte_model.Packed
    batch (no padding; max_tokens then counts real tokens). order [M] (long): order[k] = the original index of row k
    of the chunk-concatenated embeddings; un-permute with emb_original = emb_concat[torch.argsort(order)]."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1 (texts per forward pass)")
    # Longest first (stable for ties): a chunk too long for memory fails on the first forward, not the last.
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    chunks, start = [], 0
    while start < len(order):
        if packed:
            rows, tokens = 1, len(ids[order[start]])
            while start + rows < len(order) and rows < chunk_size:
                tokens += len(ids[order[start + rows]])
                if 0 < max_tokens < tokens:
                    break
                rows += 1
            chunks.append(pack([ids[i] for i in order[start : start + rows]]))
        else:
            width = round_up(len(ids[order[start]]), pad_multiple)
            rows = chunk_size if max_tokens <= 0 else max(1, min(chunk_size, max_tokens // max(width, 1)))
            chunks.append(collate([ids[i] for i in order[start : start + rows]], pad_id, width=width))
        start += rows
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
