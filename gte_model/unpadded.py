"""Unpadded ("packed") forward of any encoder or decoder LLM transformers runs through its attention interface: one
mechanism for every backbone without a hand-written family (gte_model.families), e.g. GTE v1.5 / mGTE (`gte`),
`nomic_bert`, and decoders such as Qwen3 and Llama (causal within each text, or both ways with model.bidirectional).

The backbone's own forward runs on the packed tokens as one row [1, T] with each token's position within its text
(position_ids), so embeddings, RoPE, every linear layer, norm and feed-forward are the model's own code. Only
attention must not cross from one text into the next: the backbone's attention implementation is switched, once, to
one registered through transformers' AttentionInterface (`gte_unpadded:<the one it had>`). That function receives the
`Packed` layout through the forward's keyword arguments (transformers passes them on to attention in every model
that declares `_supports_attention_backend`) and runs gte_model.packed.attend: per-text groups through
scaled_dot_product_attention on a CPU, the varlen kernels on CUDA where one is importable and works
(attention_backend). Called without the layout (a padded forward: evaluation, encode, the export), it is the
implementation the backbone had, with the same mask, so nothing else changes; the name is not saved in config.json.
A decoder's attention is causal within each text unless it was set to attend both ways (gte_model.decoder): the
layout carries that flag, since the modules' own is_causal stays True even then (the padded mask builder reads the
config's). Scores a packed kernel cannot reproduce (a bias, Gemma's soft-capping, attention sinks) are refused.

Gradient checkpointing recomputes a layer in the backward pass with the same keyword arguments, so it stays packed.
"""

from __future__ import annotations

import contextvars
import sys

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from gte_model.decoder import is_bidirectional, is_decoder
from gte_model.packed import Packed, attend

PREFIX = "gte_unpadded:"
_LAYOUT = "gte_packed"  # the keyword argument that carries the Packed layout to the attention function
# attention keyword arguments that change the scores beyond a mask: packed attention cannot apply them
_SCORE_CHANGES = ("position_bias", "softcap", "s_aux")
_PACKING: contextvars.ContextVar[bool] = contextvars.ContextVar("gte_unpadded_packing", default=False)


def supports_unpadded(backbone: nn.Module) -> bool:
    """True for an encoder or a decoder LLM whose attention goes through transformers' attention interface with the
    forward's keyword arguments passed on (`_supports_attention_backend`); False for an encoder configured as a
    cross-attending decoder (config.is_decoder) and for attention that changes its scores beyond a mask."""
    cfg = getattr(backbone, "config", None)
    if cfg is None or getattr(cfg, "is_decoder", False) or _changes_scores(backbone):
        return False
    return bool(getattr(backbone, "_supports_attention_backend", False))


def _changes_scores(backbone: nn.Module) -> bool:
    """Whether the backbone's attention changes its scores beyond a mask (Gemma 2's soft-capping, gpt-oss's attention
    sinks): what the packed kernels cannot apply, so such a backbone trains on padded chunks instead of failing at its
    first packed forward (the attention function still refuses _SCORE_CHANGES it is handed)."""
    if getattr(backbone.config, "attn_logit_softcapping", None):
        return True
    return any(name.endswith(".sinks") for name, _ in backbone.named_parameters())


def first_position(backbone: nn.Module) -> int:
    """The position id of a text's first token: padding_idx + 1 for RoBERTa-style embeddings (they derive positions
    from the input ids and skip the padding id's), else 0."""
    emb = getattr(backbone, "embeddings", None)
    if hasattr(emb, "create_position_ids_from_input_ids") and getattr(emb, "padding_idx", None) is not None:
        return int(emb.padding_idx) + 1
    return 0


def unpadded_forward(backbone: nn.Module, packed: Packed) -> Tensor:
    """Last hidden states of every token, [T, H], from the backbone's own forward on packed tokens."""
    if not supports_unpadded(backbone):
        raise ValueError(f"{type(backbone).__name__} does not run attention through transformers' attention "
                         "interface; use the padded forward (train.packed=false)")
    _install(backbone)
    ids = packed.input_ids[None]  # [1, T]
    calls = [0]
    causal = is_decoder(backbone) and not is_bidirectional(backbone)
    token = _PACKING.set(True)
    try:
        out = backbone(input_ids=ids, position_ids=packed.position_ids[None] + first_position(backbone),
                       token_type_ids=torch.zeros_like(ids), **{_LAYOUT: (packed, calls, causal)})
    finally:
        _PACKING.reset(token)
    if calls[0] == 0:  # its layers dropped the keyword arguments: attention would have crossed texts
        raise ValueError(f"{type(backbone).__name__} did not pass the packed layout on to its attention; use the "
                         "padded forward (train.packed=false)")
    return out.last_hidden_state[0]


def _install(backbone: nn.Module) -> None:
    """Switch the backbone's attention to `gte_unpadded:<its own>` (registered on first use); idempotent."""
    cfg = backbone.config
    current = cfg._attn_implementation or "eager"
    if current.startswith(PREFIX):
        return
    name = PREFIX + current
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _attention_function(current))
        AttentionMaskInterface.register(name, _mask_function(current))
    cfg._attn_implementation = name


def _mask_function(padded: str):
    """No mask in a packed forward (its attention knows the texts' boundaries; some models would otherwise build a
    [T, T] mask from the packed position ids), else the `padded` implementation's mask. Masks are made in the forward
    pass only: a checkpointed layer's recomputation reuses the one it was given."""

    def mask(**kwargs):
        return None if _PACKING.get() else ALL_MASK_ATTENTION_FUNCTIONS[padded](**kwargs)

    return mask


def _attention_function(padded: str):
    """The registered function: packed attention when the layout is given, else the `padded` implementation."""

    def attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                  dropout: float = 0.0, scaling: float | None = None, **kwargs) -> tuple[Tensor, None]:
        layout = kwargs.pop(_LAYOUT, None)
        if layout is None:
            # "eager" is not registered: each model's module defines its own eager_attention_forward
            eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
            fn = ALL_ATTENTION_FUNCTIONS.get_interface(padded, eager)
            return fn(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        packed, calls, causal = layout
        calls[0] += 1
        changes = [k for k in _SCORE_CHANGES if kwargs.get(k) is not None]
        if attention_mask is not None or changes:
            what = f"its {', '.join(changes)}" if changes else "an attention mask"
            raise ValueError(f"{type(module).__name__}: {what} cannot be packed; use the padded forward "
                             "(train.packed=false)")
        out = _packed_attention(query, key, value, packed, dropout, scaling, kwargs.get("sliding_window"), causal)
        return out, None

    return attention


def _packed_attention(q: Tensor, k: Tensor, v: Tensor, packed: Packed, p: float, scale: float | None,
                      sliding_window: int | None, causal: bool) -> Tensor:
    """q [1, heads, T, d], k and v [1, kv heads, T, d] -> [1, T, heads, d] (what attention interfaces return)."""
    _, heads, tokens, head_dim = q.shape
    if k.shape[1] != heads:  # grouped-query attention: each key/value head serves heads / kv heads query heads
        k, v = (x.repeat_interleave(heads // x.shape[1], dim=1) for x in (k, v))
    qkv = torch.stack([x[0].transpose(0, 1).to(q.dtype) for x in (q, k, v)], 1)  # [T, 3, heads, d]
    # transformers' sliding_window counts inclusively (flash attention's convention): a token sees keys at most
    # sliding_window - 1 positions away
    window = None if sliding_window is None else int(sliding_window) - 1
    o = attend(qkv.view(tokens, -1), packed, heads, head_dim, p, head_dim**-0.5 if scale is None else scale,
               window=window, causal=causal)  # [T, heads * d]
    return o.view(1, tokens, heads, head_dim)
