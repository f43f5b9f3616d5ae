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
# one per chunk. On CPUs oneDNN builds kernels per new shape (in bf16 a new shape costs more than a seen one:
# benchmarks/train_profile.py measures it); on GPUs round widths suit tensor cores. The cost is < 16 padding tokens
# per row.
PAD_MULTIPLE = 16
# train.compile buckets chunk shapes so that a compiled forward meets a few of them, not one per chunk: packed chunks
# are filled up to a multiple of BUCKET_TOKENS tokens with filler rows (their embeddings are dropped), padded chunks
# get widths rounded up to a multiple of BUCKET_WIDTH (8 widths up to 512; powers of two would pad a 260-token chunk
# to 512). Filler costs < BUCKET_TOKENS tokens per chunk.
BUCKET_TOKENS = 256
BUCKET_WIDTH = 64


def make_chunks(
    ids: Sequence[Sequence[int]],
    chunk_size: int,
    pad_id: int,
    max_tokens: int = 0,
    pad_multiple: int = PAD_MULTIPLE,
    packed: bool = False,
    bucket: bool = False,
) -> tuple[list[Chunk | Packed], Tensor]:
    """Token id lists -> (chunks, order): longest first, at most chunk_size texts per chunk and, when max_tokens > 0,
    at most max_tokens tokens (short texts then go in bigger chunks, long ones in smaller). A chunk is padded tensors
    (each chunk padded to its own longest row rounded up to pad_multiple) or, with packed=True, a gte_model.Packed
    batch (no padding; max_tokens then counts real tokens). bucket=True rounds shapes for a compiled forward
    (BUCKET_TOKENS, BUCKET_WIDTH; a packed chunk's last `fill_rows` rows are then filler). order [M] (long):
    order[k] = the original index of row k of the chunk-concatenated embeddings (filler excluded); un-permute with
    emb_original = emb_concat[torch.argsort(order)]."""
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
            chunks.append(_pack_chunk([ids[i] for i in order[start : start + rows]], pad_id, bucket))
        else:
            width = round_up(len(ids[order[start]]), BUCKET_WIDTH if bucket else pad_multiple)
            rows = chunk_size if max_tokens <= 0 else max(1, min(chunk_size, max_tokens // max(width, 1)))
            chunks.append(collate([ids[i] for i in order[start : start + rows]], pad_id, width=width))
        start += rows
    return chunks, torch.tensor(order, dtype=torch.long)


def _pack_chunk(ids: list, pad_id: int, bucket: bool) -> Packed:
    """pack(ids), with bucket=True filled up to a multiple of BUCKET_TOKENS tokens by filler rows of pad_id, none
    longer than the chunk's longest text (so neither max_seqlen nor the positions grow)."""
    if not bucket:
        return pack(ids)
    longest, missing = len(ids[0]), round_up(sum(map(len, ids)), BUCKET_TOKENS) - sum(map(len, ids))
    filler = [[pad_id] * min(longest, missing - k) for k in range(0, missing, longest)]
    chunk = pack(ids + filler)
    chunk.fill_rows = len(filler)
    return chunk


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
