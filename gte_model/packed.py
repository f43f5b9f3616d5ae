"""The unpadded ("packed") BERT forward: every real token of a batch in one [T, H] matrix, no padding rows.

A padded forward of a contrastive batch spends most of its work on padding: short queries and long documents padded
to a common width. Here the embeddings, every linear layer, LayerNorm and the feed-forward run on the packed [T, H]
tokens (one large GEMM per weight instead of many small padded ones); only attention, which needs a sequence axis,
scatters the tokens into length-sorted groups padded to their own longest row (rounded to 16), runs
scaled_dot_product_attention with a key-padding mask, and gathers the real rows back. The weights are the backbone's
own modules, so checkpoints and exports are unchanged and the result equals the padded BertModel forward (eval mode:
max |diff| ~1e-6, tests/gte_model/test_packed.py). Dropout draws different masks than the padded path, with the same
distribution; the gradient cache replays it exactly, since both of its passes use this forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

# Attention groups hold at most this many padded tokens; widths round up to ATTN_PAD_MULTIPLE (a bounded set of
# shapes). Attention is ~3% of MiniLM's FLOPs at 128 tokens, so the group size matters little; fewer calls is better.
ATTN_GROUP_TOKENS = 4096
ATTN_PAD_MULTIPLE = 16


@dataclass
class Packed:
    """Texts packed for `packed_forward`; rows keep the order of the id lists given to `pack`.

    input_ids, position_ids, seq_index, dest: [T] (one entry per real token; dest = the token's slot in its attention
    group's padded [rows * width] buffer). lengths, starts: [B]. groups: (first token, end token, first row, rows,
    width) per attention group, as Python ints (shapes must not need a device sync)."""

    input_ids: Tensor
    position_ids: Tensor
    seq_index: Tensor
    dest: Tensor
    lengths: Tensor
    starts: Tensor
    groups: list[tuple[int, int, int, int, int]]

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def to(self, device: torch.device | str) -> Packed:
        move = {k: getattr(self, k).to(device) for k in ("input_ids", "position_ids", "seq_index", "dest", "lengths")}
        return Packed(**move, starts=self.starts.to(device), groups=self.groups)


def supports_packing(backbone) -> bool:
    """True for an encoder-only BertModel with absolute positions (BERT, MiniLM, the GTE presets)."""
    cfg = getattr(backbone, "config", None)
    return (
        type(backbone).__name__ == "BertModel"
        and cfg is not None
        and not getattr(cfg, "is_decoder", False)
        and getattr(cfg, "position_embedding_type", "absolute") in (None, "absolute")
    )


def round_up(n: int, multiple: int) -> int:
    """n rounded up to a multiple of `multiple` (padded widths: a bounded set of shapes)."""
    return -(-n // multiple) * multiple


def pack(ids: Sequence[Sequence[int]], group_tokens: int = ATTN_GROUP_TOKENS) -> Packed:
    """Token id lists -> Packed. Attention groups are consecutive rows, so sort the lists by length first (longest
    first) for groups with little padding; train.step.make_chunks does."""
    if not ids or any(len(x) == 0 for x in ids):
        raise ValueError("pack needs at least one text and no empty token list")
    lengths = [len(x) for x in ids]
    groups, dest, row, tok = [], [], 0, 0
    while row < len(ids):
        width = round_up(lengths[row], ATTN_PAD_MULTIPLE)
        rows = 1
        # grow while the group's padded size (rows x its widest row) stays within budget
        while row + rows < len(ids):
            w = round_up(max(width, lengths[row + rows]), ATTN_PAD_MULTIPLE)
            if (rows + 1) * w > group_tokens:
                break
            rows, width = rows + 1, w
        n = sum(lengths[row : row + rows])
        dest.extend(k * width + p for k in range(rows) for p in range(lengths[row + k]))
        groups.append((tok, tok + n, row, rows, width))
        row, tok = row + rows, tok + n
    lens = torch.tensor(lengths, dtype=torch.long)
    return Packed(
        input_ids=torch.tensor([t for x in ids for t in x], dtype=torch.long),
        position_ids=torch.cat([torch.arange(n) for n in lengths]),
        seq_index=torch.repeat_interleave(torch.arange(len(ids)), lens),
        dest=torch.tensor(dest, dtype=torch.long),
        lengths=lens,
        starts=torch.cumsum(lens, 0) - lens,
        groups=groups,
    )


def packed_forward(backbone, packed: Packed) -> Tensor:
    """Last hidden states of every real token, [T, H], for a BertModel (see supports_packing)."""
    emb = backbone.embeddings
    x = emb.word_embeddings(packed.input_ids) + emb.position_embeddings(packed.position_ids)
    x = emb.LayerNorm(x + emb.token_type_embeddings.weight[0])  # our tokenisation: token type 0
    x = _dropout(x, emb.dropout.p, backbone.training)
    # transformers 5 marks each layer, 4.x the encoder
    encoder_checkpointing = getattr(backbone.encoder, "gradient_checkpointing", False)
    for layer in backbone.encoder.layer:
        if backbone.training and (encoder_checkpointing or getattr(layer, "gradient_checkpointing", False)):
            x = checkpoint(_layer, layer, x, packed, use_reentrant=False)
        else:
            x = _layer(layer, x, packed)
    return x


def _layer(layer, x: Tensor, packed: Packed) -> Tensor:
    """One BertLayer on packed tokens [T, H] -> [T, H]."""
    attn, training = layer.attention.self, layer.training
    qkv = F.linear(  # one GEMM for Q, K and V: [T, 3H]
        x,
        torch.cat([attn.query.weight, attn.key.weight, attn.value.weight]),
        torch.cat([attn.query.bias, attn.key.bias, attn.value.bias]),
    )
    heads, head_dim = attn.num_attention_heads, attn.attention_head_size
    p = attn.dropout.p if training else 0.0
    outs = []
    for t0, t1, r0, rows, width in packed.groups:
        slots = packed.dest[t0:t1]
        buf = qkv.new_zeros(rows * width, qkv.shape[1])
        buf[slots] = qkv[t0:t1]
        q, k, v = buf.view(rows, width, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # [rows, heads, w, d]
        keep = torch.arange(width, device=x.device)[None, :] < packed.lengths[r0 : r0 + rows, None]  # [rows, w]
        o = _attention(q, k, v, keep[:, None, None, :], p, attn.scaling)
        outs.append(o.transpose(1, 2).reshape(rows * width, -1)[slots])  # real rows only: [t1 - t0, H]
    out = layer.attention.output  # BertSelfOutput: dense, dropout, LayerNorm(+ residual)
    a = out.LayerNorm(_dropout(out.dense(torch.cat(outs)), out.dropout.p, training) + x)
    ffn = layer.output  # BertOutput: dense, dropout, LayerNorm(+ residual)
    return ffn.LayerNorm(_dropout(ffn.dense(layer.intermediate(a)), ffn.dropout.p, training) + a)


def _attention(q: Tensor, k: Tensor, v: Tensor, keep: Tensor, p: float, scale: float) -> Tensor:
    """Softmax attention [rows, heads, w, d] with key mask keep [rows, 1, 1, w] and dropout p on the probabilities.
    With dropout on a CPU, the explicit form with _dropout's cheap mask (SDPA would fall back to the same math, with
    bernoulli masks); otherwise scaled_dot_product_attention."""
    if p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p, scale=scale)
    bias = torch.zeros(keep.shape, dtype=torch.float32, device=q.device).masked_fill_(~keep, float("-inf"))
    scores = torch.matmul(q * scale, k.transpose(-1, -2)) + bias  # [rows, heads, w, w], padding keys at -inf
    return torch.matmul(_dropout(scores.softmax(dim=-1), p, True).to(v.dtype), v)


# Dropout masks on a CPU: torch's bernoulli_ draws one random number per element and was 19% of a MiniLM training
# step (torch.profiler, benchmarks/README.md). One int64 draw gives four 16-bit words instead; the low 15 bits of each
# are uniform, so an element is kept when they are >= round(p * 2^15): p is honoured to 1.5e-5 (0.1 -> 0.100006).
_MASK_BITS = 15


def _dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout (as nn.Dropout: zero with probability p, scale the rest by 1/(1-p)), from the global RNG."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_().view(torch.int16)[:n].view(x.shape)
    keep = (words & ((1 << _MASK_BITS) - 1)) >= round(p * (1 << _MASK_BITS))
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))  # one multiply forward and backward (masked_fill: 2x slower)
