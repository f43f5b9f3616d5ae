"""The unpadded ("packed") forward's layout and attention: every real token of a batch in one [T, H] matrix, no
padding rows. The per-family layers around it (BERT, RoBERTa, XLM-RoBERTa, MPNet, ModernBERT) are gte_model.families;
any other encoder or decoder LLM on transformers' attention interface (GTE v1.5, NomicBERT, Qwen3, Llama, ...)
reaches `attend` through gte_model.unpadded (a decoder's attention causal within each row).

A padded forward of a contrastive batch spends most of its work on padding: short queries and long documents padded
to a common width. Here the embeddings, every linear layer, LayerNorm and the feed-forward run on the packed [T, H]
tokens (one large GEMM per weight instead of many small padded ones). Only attention needs to know where one text
ends and the next begins:
  - on a GPU, one varlen kernel call attends over all texts of the chunk at once, told the boundaries by cumulative
    offsets (cu_seqlens [B+1], max_seqlen): no padding, no mask. The kernel is the first that is importable and works
    (`attention_backend`): flash_attn's flash_attn_varlen_qkvpacked_func, torch's own varlen_attn (torch >= 2.10; no
    dropout, so only where attention dropout is off), nested jagged tensors through scaled_dot_product_attention, or
    FlexAttention with a document mask (no dropout); a kernel that raises is skipped from then on, with a warning;
  - on a CPU, the tokens are scattered into length-sorted groups padded to their own longest row (rounded to 16),
    scaled_dot_product_attention runs with a key-padding mask, and the real rows are gathered back. A score bias
    (MPNet's relative positions) or a local window (ModernBERT) takes this path on CUDA too (see `attend`).
The weights are the backbone's own modules (a Linear wrapped by a LoRA adapter is called, not read), so checkpoints
and exports are unchanged and the result equals the padded HF forward (eval mode: max |diff| ~1e-6,
tests/gte_model/test_packed.py, test_packed_families.py and test_varlen.py). Dropout draws different masks than the
padded path, with the same distribution. The gradient cache replays it exactly: both of its passes run this forward
from the same recorded CPU and CUDA generator states, and every kernel above draws its attention dropout from the CUDA
generator (flash_attn and scaled_dot_product_attention keep the philox seed and offset for their backward).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# CPU attention groups hold at most this many padded tokens (a bound on the score tensors' memory); widths round up
# to ATTN_PAD_MULTIPLE (a bounded set of shapes). Within that bound, _groups chooses the cuts by the cost model below:
# padded scores, not padded tokens, are what a group's attention costs (benchmarks/README.md, "Issue 28, part 3").
ATTN_GROUP_TOKENS = 4096
ATTN_PAD_MULTIPLE = 16
# The cost model of the grouping (_groups), in units of one padded score (a row's query x key at one width): each
# padded token also costs about this many scores (its q/k/v copies in and out of the group buffer), and each group
# about this many (its own calls, forward and backward).
_GROUP_TOKEN_COST = 64
_GROUP_COST = 8192
# Varlen kernels in order of preference on CUDA; "grouped" (the CPU path) is the fallback when none works.
VARLEN_BACKENDS = ("flash_attn", "torch_varlen", "nested", "flex")
_TENSORS = ("input_ids", "position_ids", "seq_index", "dest", "lengths", "starts", "cu_seqlens")


@dataclass
class Packed:
    """Texts packed for `packed_forward`; rows keep the order of the id lists given to `pack`.

    input_ids, position_ids, seq_index, dest: [T] (one entry per real token; dest = the token's slot in the CPU
    attention groups' padded buffers, laid end to end: group after group, each [rows * width]). lengths, starts:
    [B]. cu_seqlens: int32 [B+1], the offsets of the rows in the token axis (0, then the running sum of lengths).
    groups: (first token, end token, first row, rows, width) per CPU attention group; max_seqlen, min_seqlen: the
    longest and shortest row. Everything but tensors is a Python int, computed here on the host: shapes and kernel
    arguments never need a device sync. fill_rows: how many rows at the end are filler that only round the token
    count up to a bucket (train.step.make_chunks); their embeddings are dropped by the caller."""

    input_ids: Tensor
    position_ids: Tensor
    seq_index: Tensor
    dest: Tensor
    lengths: Tensor
    starts: Tensor
    groups: list[tuple[int, int, int, int, int]]
    cu_seqlens: Tensor
    max_seqlen: int
    min_seqlen: int
    fill_rows: int = 0

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def real_rows(self) -> int:
        """Rows that are texts (all rows but the filler)."""
        return len(self) - self.fill_rows

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Packed:
        """On `device`; non_blocking=True from pinned memory lets the copy overlap the GPU's work."""
        moved = {k: getattr(self, k).to(device, non_blocking=non_blocking) for k in _TENSORS}
        return dataclasses.replace(self, **moved)

    def pin_memory(self) -> Packed:
        """In page-locked host memory (needs CUDA), for an asynchronous copy to the GPU."""
        return dataclasses.replace(self, **{k: getattr(self, k).pin_memory() for k in _TENSORS})


def round_up(n: int, multiple: int) -> int:
    """n rounded up to a multiple of `multiple` (padded widths: a bounded set of shapes)."""
    return -(-n // multiple) * multiple


def pack(ids: Sequence[Sequence[int]], group_tokens: int = ATTN_GROUP_TOKENS) -> Packed:
    """Token id lists -> Packed. CPU attention groups are consecutive rows, so sort the lists by length first (longest
    first) for groups with little padding; train.step.make_chunks does."""
    if not ids or any(len(x) == 0 for x in ids):
        raise ValueError("pack needs at least one text and no empty token list")
    lengths = [len(x) for x in ids]
    groups, row_slot = _groups(lengths, group_tokens)
    lens = torch.tensor(lengths, dtype=torch.long)
    total = int(sum(lengths))
    starts = torch.cumsum(lens, 0) - lens
    seq_index = torch.repeat_interleave(torch.arange(len(ids)), lens)  # [T]
    position_ids = torch.arange(total) - starts[seq_index]  # 0..len-1 within each row
    dest = torch.tensor(row_slot)[seq_index] + position_ids
    return Packed(
        input_ids=torch.from_numpy(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=total)),
        position_ids=position_ids,
        seq_index=seq_index,
        dest=dest,
        lengths=lens,
        starts=starts,
        groups=groups,
        cu_seqlens=torch.cat([torch.zeros(1, dtype=torch.int32), torch.cumsum(lens, 0).to(torch.int32)]),
        max_seqlen=max(lengths),
        min_seqlen=min(lengths),
    )


def _groups(lengths: list[int], group_tokens: int) -> tuple[list, list[int]]:
    """CPU attention groups of consecutive rows, and per row the slot of its first token in the groups' padded
    buffers laid end to end.

    A group's attention work is rows x width^2 (the padded score matrix of every row), so one wide row in a group of
    short ones costs as if they were all wide. Where the groups split is chosen to minimise the padded work plus a
    fixed cost per group (the calls around each group), by dynamic programming over the points where the rounded
    width changes; a group also holds at most group_tokens padded tokens (its memory), and a run too big for that is
    cut into equal groups of whole rows."""
    widths = [round_up(n, ATTN_PAD_MULTIPLE) for n in lengths]
    cuts = [0] + [i for i in range(1, len(widths)) if widths[i] != widths[i - 1]] + [len(widths)]
    # best[j]: least cost of the rows before cuts[j]; back[j]: where that group starts
    best, back = [0.0] + [math.inf] * (len(cuts) - 1), [0] * len(cuts)
    for j in range(1, len(cuts)):
        width = 0
        for i in range(j - 1, -1, -1):
            width = max(width, max(widths[cuts[i]:cuts[i + 1]]))
            rows = cuts[j] - cuts[i]
            per_group = max(1, group_tokens // width)
            n_groups = -(-rows // per_group)
            cost = best[i] + rows * width * (width + _GROUP_TOKEN_COST) + n_groups * _GROUP_COST
            if cost < best[j]:
                best[j], back[j] = cost, i
    spans, j = [], len(cuts) - 1
    while j > 0:
        spans.append((cuts[back[j]], cuts[j]))
        j = back[j]
    groups, row_slot, tok, slot = [], [], 0, 0
    for start, end in reversed(spans):
        n_groups = -(-(end - start) // max(1, group_tokens // max(widths[start:end])))
        for part in range(n_groups):  # whole rows, split as evenly as possible
            row, stop = start + (end - start) * part // n_groups, start + (end - start) * (part + 1) // n_groups
            width, n = max(widths[row:stop]), sum(lengths[row:stop])
            groups.append((tok, tok + n, row, stop - row, width))
            row_slot.extend(range(slot, slot + (stop - row) * width, width))
            tok, slot = tok + n, slot + (stop - row) * width
    return groups, row_slot


# ---- attention ---------------------------------------------------------------------------------------------------
# Attention stays out of torch.compile graphs (train.compile): its Python-int metadata (CPU groups, max_seqlen) would
# otherwise make dynamo recompile for nearly every chunk. The GEMMs, LayerNorms, dropouts and GELU around it are what
# compile fuses; the kernels here are already fused.
@torch.compiler.disable
def attend(
    qkv: Tensor,
    packed: Packed,
    heads: int,
    head_dim: int,
    p: float,
    scale: float,
    bias: dict[int, Tensor] | None = None,
    window: int | None = None,
    causal: bool = False,
) -> Tensor:
    """Self-attention within each row: qkv [T, 3H] -> [T, H].

    bias: width -> an additive score bias [heads, w, w] of the positions within a row (MPNet's relative positions:
    the same for every row, so one per group width); window: a token attends to keys at most this many positions
    away (ModernBERT's local layers). Either one runs the grouped path on CUDA too: the varlen kernels above take
    neither a bias nor (as called here) a window. causal: a token attends to the keys of its row at or before it
    only (a decoder LLM; every varlen kernel takes it)."""
    if bias is not None or window is not None:
        return _grouped_attention(qkv, packed, heads, head_dim, p, scale, bias, window, causal)
    backend = attention_backend(qkv.device, qkv.dtype, p, head_dim)
    if backend == "grouped":
        return _grouped_attention(qkv, packed, heads, head_dim, p, scale, causal=causal)
    try:
        out = varlen_attention(qkv.view(-1, 3, heads, head_dim), packed.cu_seqlens, packed.max_seqlen,
                               packed.min_seqlen, p, scale, backend, causal=causal)
    except torch.cuda.OutOfMemoryError:
        raise
    except (RuntimeError, NotImplementedError, TypeError, ValueError, ImportError, AttributeError) as exc:
        if _FORCED[0] is not None:
            raise
        _BROKEN.add((backend, qkv.device.type, qkv.dtype, p > 0))
        warnings.warn(f"gte_model.packed: varlen attention {backend!r} failed on {qkv.device} {qkv.dtype} "
                      f"(dropout {p}): {exc!s:.300}; using the next backend from now on", stacklevel=2)
        return attend(qkv, packed, heads, head_dim, p, scale, causal=causal)
    return out.reshape(qkv.shape[0], heads * head_dim)


def _grouped_attention(
    qkv: Tensor,
    packed: Packed,
    heads: int,
    head_dim: int,
    p: float,
    scale: float,
    bias: dict[int, Tensor] | None = None,
    window: int | None = None,
    causal: bool = False,
) -> Tensor:
    """The CPU path: length-sorted groups padded to their own widest row, a key-padding mask, real rows back. Each
    row of a group is its own text from position 0, so a causal mask is the same lower triangle for every row.

    One scatter puts every token into the groups' buffers laid end to end and one gather takes the real rows back;
    the buffer is split (not sliced) into groups, so the backward pass also joins the groups' gradients once instead
    of adding each group's into a full-size zero tensor."""
    sizes = [rows * width for *_, rows, width in packed.groups]
    buf = qkv.new_zeros(sum(sizes), qkv.shape[1])
    buf[packed.dest] = qkv
    outs = []
    for (_, _, r0, rows, width), part in zip(packed.groups, buf.split(sizes), strict=True):
        q, k, v = part.view(rows, width, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # [rows, heads, w, d]
        pos = torch.arange(width, device=qkv.device)
        keep = (pos[None, :] < packed.lengths[r0 : r0 + rows, None])[:, None, None, :]  # [rows, 1, 1, w]
        if causal:  # [rows, 1, w, w]; a padding query still sees its row's first key: no all -inf softmax
            keep = keep & (pos[None, :] <= pos[:, None])
        if window is not None:
            # [rows, 1, w, w]; the diagonal too: a padding query beyond a row's window would see no key at all, and
            # its all -inf softmax gives NaN, which the backward spreads to the real keys (a real query sees itself)
            keep = (keep & ((pos[:, None] - pos[None, :]).abs() <= window)) | torch.eye(width, dtype=torch.bool,
                                                                                         device=qkv.device)
        o = _attention(q, k, v, keep, p, scale, None if bias is None else bias[width])
        outs.append(o.transpose(1, 2).reshape(rows * width, -1))
    return torch.cat(outs)[packed.dest]  # real rows only: [T, H]


def _attention(q: Tensor, k: Tensor, v: Tensor, keep: Tensor, p: float, scale: float, bias: Tensor | None) -> Tensor:
    """Softmax attention [rows, heads, w, d] with key mask keep [rows, 1, 1 or w, w], an optional score bias
    [heads, w, w] and dropout p on the probabilities. With a bias, or dropout on a CPU, the explicit form (with
    apply_dropout's cheap mask: SDPA would fall back to the same math, with bernoulli masks); otherwise
    scaled_dot_product_attention."""
    if bias is None and (p == 0.0 or q.device.type != "cpu"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p, scale=scale)
    scores = torch.matmul(q * scale, k.transpose(-1, -2))  # [rows, heads, w, w] in the matmul's dtype
    if bias is not None:
        scores = scores + bias
    # masked keys at -inf in place, and the softmax and dropout in the scores' own dtype: under bf16 autocast an fp32
    # mask added to them would lift the largest tensors of the step to fp32 and back (an fp32 bias, MPNet's, does)
    probs = scores.masked_fill_(~keep, float("-inf")).softmax(dim=-1)
    return torch.matmul(apply_dropout(probs, p, True).to(v.dtype), v)


_BROKEN: set[tuple[str, str, torch.dtype, bool]] = set()  # (backend, device type, dtype, dropout) that raised
_FORCED: list[str | None] = [None]  # force_attention


@contextlib.contextmanager
def force_attention(backend: str):
    """Use this attention backend (one of VARLEN_BACKENDS or "grouped") on any device inside the block, errors
    raised rather than skipped: for tests and benchmarks comparing kernels."""
    if backend not in (*VARLEN_BACKENDS, "grouped"):
        raise ValueError(f"attention backend {backend!r}: choose one of {(*VARLEN_BACKENDS, 'grouped')}")
    before, _FORCED[0] = _FORCED[0], backend
    try:
        yield
    finally:
        _FORCED[0] = before


def attention_backend(device: torch.device | str, dtype: torch.dtype, dropout: float, head_dim: int = 64) -> str:
    """The attention the packed forward runs for activations of `dtype` on `device` with attention dropout `dropout`:
    "grouped" on a CPU, else the first of VARLEN_BACKENDS that is importable, supports the case and has not failed."""
    if _FORCED[0] is not None:
        return _FORCED[0]
    kind = torch.device(device).type
    if kind != "cuda":
        return "grouped"
    for name in VARLEN_BACKENDS:
        if (name, kind, dtype, dropout > 0) not in _BROKEN and _supports(name, dtype, dropout, head_dim):
            return name
    return "grouped"


def _supports(name: str, dtype: torch.dtype, dropout: float, head_dim: int) -> bool:
    flash_shape = dtype in (torch.float16, torch.bfloat16) and head_dim % 8 == 0 and head_dim <= 256
    if name == "flash_attn":
        return flash_shape and _flash_attn() is not None
    if name == "torch_varlen":  # its kernel call hard-codes dropout 0
        return flash_shape and dropout == 0 and _torch_varlen() is not None
    if name == "nested":
        return hasattr(torch.nested, "nested_tensor_from_jagged")
    return dropout == 0 and _flex_attention_fn(compiled=False) is not None  # flex: no dropout


def varlen_attention(
    qkv: Tensor,
    cu_seqlens: Tensor,
    max_seqlen: int,
    min_seqlen: int,
    dropout: float,
    scale: float,
    backend: str,
    causal: bool = False,
) -> Tensor:
    """Attention of each row to itself only, rows given by offsets: qkv [T, 3, heads, d] -> [T, heads, d].
    cu_seqlens int32 [B+1] on qkv's device; max_seqlen / min_seqlen the longest / shortest row (Python ints);
    causal: each token to the keys of its row at or before it only."""
    if backend == "flash_attn":
        return _flash_attn()(qkv, cu_seqlens, max_seqlen, dropout_p=dropout, softmax_scale=scale, causal=causal)
    q, k, v = qkv.unbind(1)  # each [T, heads, d]
    if backend == "torch_varlen":
        if dropout:
            raise ValueError("torch varlen_attn has no dropout")
        factor = scale * math.sqrt(q.shape[-1])  # its scale argument is torch >= 2.11 only; BERT's is the default
        q = q if abs(factor - 1.0) < 1e-6 else q * factor
        # causal as flash attention's window: no key to the right (a torch without window_size raises TypeError,
        # and `attend` moves on to the next kernel)
        window = {"window_size": (-1, 0)} if causal else {}
        return _torch_varlen()(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, **window)
    if backend == "nested":  # causal: CUDA's flash and efficient kernels only (torch's math kernel refuses it)
        return _nested_attention(q, k, v, cu_seqlens, max_seqlen, min_seqlen, dropout, scale, causal)
    if backend == "flex":
        return _flex_attention(q, k, v, cu_seqlens, dropout, scale, causal)
    raise ValueError(f"unknown varlen attention backend {backend!r}; choose one of {VARLEN_BACKENDS}")


def _nested_attention(
    q, k, v, cu_seqlens, max_seqlen: int, min_seqlen: int, dropout: float, scale: float, causal: bool
) -> Tensor:
    """Nested jagged tensors [B, heads, j, d] (one offsets tensor: the same ragged dimension) through SDPA."""
    offsets = cu_seqlens.to(torch.int64)  # the CPU kernels take int64 offsets; CUDA converts back to int32

    def jagged(x: Tensor) -> Tensor:
        x = x if x.is_cuda else x.contiguous()  # the math kernel (CPU) wants contiguous values; CUDA's take strides
        nt = torch.nested.nested_tensor_from_jagged(x, offsets, min_seqlen=min_seqlen, max_seqlen=max_seqlen)
        return nt.transpose(1, 2)  # [B, j, heads, d] -> [B, heads, j, d]

    out = F.scaled_dot_product_attention(jagged(q), jagged(k), jagged(v), dropout_p=dropout, scale=scale,
                                         is_causal=causal)
    return out.transpose(1, 2).values()  # [T, heads, d]


def _flex_attention(q, k, v, cu_seqlens, dropout: float, scale: float, causal: bool) -> Tensor:
    """FlexAttention over the whole chunk as one sequence [1, heads, T, d] with a document mask, causal within a
    document when asked (no dropout)."""
    if dropout:
        raise ValueError("FlexAttention has no dropout")
    from torch.nn.attention.flex_attention import create_block_mask

    total = q.shape[0]
    doc = torch.searchsorted(cu_seqlens[1:].to(torch.int64), torch.arange(total, device=q.device), right=True)

    def same_doc(b, h, q_idx, kv_idx):
        return doc[q_idx] == doc[kv_idx]

    def same_doc_causal(b, h, q_idx, kv_idx):
        return (doc[q_idx] == doc[kv_idx]) & (kv_idx <= q_idx)

    mask = create_block_mask(same_doc_causal if causal else same_doc, None, None, total, total, device=q.device)
    q, k, v = (x.transpose(0, 1)[None] for x in (q, k, v))  # [1, heads, T, d]
    return _flex_attention_fn(compiled=q.is_cuda)(q, k, v, block_mask=mask, scale=scale)[0].transpose(0, 1)


def _flash_attn():
    try:
        from flash_attn import flash_attn_varlen_qkvpacked_func
    except ImportError:  # also a flash_attn built for another torch (undefined symbol)
        return None
    return flash_attn_varlen_qkvpacked_func


def _torch_varlen():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


_FLEX_COMPILED: list = []


def _flex_attention_fn(compiled: bool):
    """flex_attention (None when this torch lacks it); compiled=True: the compiled kernel (eager FlexAttention
    materialises the [T, T] scores), built on first use."""
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError:
        return None
    if not compiled:
        return flex_attention
    if not _FLEX_COMPILED:
        _FLEX_COMPILED.append(torch.compile(flex_attention, dynamic=True))
    return _FLEX_COMPILED[0]


# Dropout masks on a CPU: torch's bernoulli_ draws one random number per element, a large share of a MiniLM
# training step (benchmarks/README.md, "The unpadded forward"). One int64 draw gives four 16-bit words instead; the
# low 15 bits of each are uniform, so an element is kept when they are >= round(p * 2^15): p is honoured to 1.5e-5
# (0.1 -> 0.100006).
_MASK_BITS = 15


def apply_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout (as nn.Dropout: zero with probability p, scale the rest by 1/(1-p)), from the global RNG."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_().view(torch.int16)[:n].view(x.shape)
    keep = (words & ((1 << _MASK_BITS) - 1)) >= round(p * (1 << _MASK_BITS))
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))  # one multiply forward and backward (masked_fill: slower)
