"""The packed forward (gte_model.packed) of each backbone family: the backbone's own modules and weights applied to
packed tokens [T, H], so checkpoints and exports are unchanged and the result equals the padded HF forward.

A family is four small pieces: the embeddings, what every layer shares (rotary cos/sin, a relative-position bias),
one layer on [T, H], and the final norm. They differ in:
  - BERT: absolute positions from 0, token type 0 added;
  - RoBERTa / XLM-RoBERTa: BERT's layers; positions start at padding_idx + 1 (HF's create_position_ids_from_input_ids
    for a row with no padding id inside it), token type 0 added;
  - MPNet: positions from padding_idx + 1 (= 2) and a bucketed relative-position bias added to every layer's scores.
    The bias depends only on the positions within a row, so it is computed once per attention group width and
    shared by all rows and layers (never across texts);
  - ModernBERT: no position embeddings but RoPE on queries and keys (per layer type: global and local theta),
    pre-norm layers, a GLU feed-forward, local layers attending within local_attention // 2 positions either side,
    a final norm; no token types.
The families with a bias (MPNet) or a window (ModernBERT's local layers) run the grouped attention on CUDA too.
Any other encoder or decoder LLM whose attention goes through transformers' attention interface (GTE v1.5 / mGTE,
NomicBERT, Qwen3, Llama, remote code that declares it) runs unpadded by one generic mechanism, gte_model.unpadded
(decoders causal within each text); the rest (models with their own attention code) are not packed: the trainer uses
padded chunks and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers.models.modernbert.modeling_modernbert import apply_rotary_pos_emb

from gte_model.packed import Packed, apply_dropout, attend
from gte_model.unpadded import first_position, supports_unpadded, unpadded_forward


@dataclass(frozen=True)
class Family:
    """How one backbone family runs on packed tokens."""

    embed: Callable[[nn.Module, Packed], Tensor]  # (backbone, packed) -> [T, H]
    layers: Callable[[nn.Module], nn.ModuleList]  # backbone -> its encoder layers
    shared: Callable[[nn.Module, Packed, Tensor], object]  # (backbone, packed, embeddings) -> what every layer uses
    layer: Callable[[nn.Module, Tensor, Packed, object], Tensor]  # (layer, [T, H], packed, shared) -> [T, H]
    finish: Callable[[nn.Module, Tensor], Tensor]  # (backbone, [T, H]) -> last hidden states [T, H]


def packed_forward(backbone: nn.Module, packed: Packed) -> Tensor:
    """Last hidden states of every token, [T, H]: a known family's own code, else any other encoder through the
    attention interface (gte_model.unpadded; see supports_packing)."""
    family = family_of(backbone)
    if family is None:
        return unpadded_forward(backbone, packed)
    x = family.embed(backbone, packed)
    shared = family.shared(backbone, packed, x)
    # transformers 5 marks each layer, 4.x the encoder
    encoder_checkpointing = getattr(getattr(backbone, "encoder", backbone), "gradient_checkpointing", False)
    for layer in family.layers(backbone):
        if backbone.training and (encoder_checkpointing or getattr(layer, "gradient_checkpointing", False)):
            x = checkpoint(family.layer, layer, x, packed, shared, use_reentrant=False)
        else:
            x = family.layer(layer, x, packed, shared)
    return family.finish(backbone, x)


def supports_packing(backbone: nn.Module) -> bool:
    """True for an encoder-only backbone of a known family (BERT, RoBERTa, XLM-RoBERTa, MPNet, ModernBERT) with its
    usual positions, or any other encoder or decoder LLM whose attention goes through transformers' attention
    interface (GTE v1.5, NomicBERT, Qwen3, Llama, ...): what packed_forward computes exactly."""
    return family_of(backbone) is not None or supports_unpadded(backbone)


def max_positions(backbone: nn.Module) -> int | None:
    """Tokens one text may hold (special tokens included): the backbone's max_position_embeddings, less the positions
    RoBERTa-style embeddings skip (they start at padding_idx + 1); None when its config does not say."""
    limit = getattr(backbone.config, "max_position_embeddings", None)
    if limit is not None and family_of(backbone) in (_ROBERTA, _MPNET):
        limit -= _after_padding(backbone)
    elif limit is not None and family_of(backbone) is None:
        limit -= first_position(backbone)
    return limit


def set_rope_theta(backbone: nn.Module, theta: float) -> None:
    """Set the rotary base of a RoPE backbone's global-attention layers (of all its layers when it has one kind) and
    rebuild its rotary tables; the config carries the base into checkpoints and exports. A larger base slows the
    rotation, so far-apart positions stay distinguishable: GTE v1.5 raised it to extend 512 to 8,192 tokens.
    ValueError for a backbone without rotary position embeddings."""
    params = getattr(backbone.config, "rope_parameters", None)
    rotary = getattr(backbone, "rotary_emb", None)
    if not params or rotary is None:
        raise ValueError(f"{type(backbone).__name__} has no rotary position embeddings (its positions are learned "
                         "absolute ones), so there is no RoPE base to set")
    params.get("full_attention", params)["rope_theta"] = float(theta)  # ModernBERT: per layer type; others: one
    device = next(iter(rotary.buffers())).device
    backbone.rotary_emb = type(rotary)(config=backbone.config, device=device)


def family_of(backbone: nn.Module) -> Family | None:
    """The family whose packed forward reproduces this backbone's padded one; None for decoders, relative position
    embedding types and classes of no known family (remote code included)."""
    cfg = getattr(backbone, "config", None)
    if cfg is None or getattr(cfg, "is_decoder", False):
        return None
    if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
        return None
    return FAMILIES.get(type(backbone).__name__)


# ---- BERT, RoBERTa, XLM-RoBERTa, MPNet: absolute position embeddings, post-norm layers -----------------------------
def _absolute_embed(backbone: nn.Module, packed: Packed, first_position: int) -> Tensor:
    emb = backbone.embeddings
    x = emb.word_embeddings(packed.input_ids) + emb.position_embeddings(packed.position_ids + first_position)
    if hasattr(emb, "token_type_embeddings"):
        x = x + emb.token_type_embeddings.weight[0]  # our tokenisation: token type 0
    return apply_dropout(emb.LayerNorm(x), emb.dropout.p, backbone.training)


def _bert_embed(backbone: nn.Module, packed: Packed) -> Tensor:
    return _absolute_embed(backbone, packed, 0)


def _after_padding(backbone: nn.Module) -> int:
    """RoBERTa's (and MPNet's) first position: padding_idx + 1."""
    return backbone.embeddings.padding_idx + 1


def _after_padding_embed(backbone: nn.Module, packed: Packed) -> Tensor:
    return _absolute_embed(backbone, packed, _after_padding(backbone))


def _qkv(query: nn.Module, key: nn.Module, value: nn.Module, x: Tensor) -> Tensor:
    """Q, K and V: [T, H] -> [T, 3H]; one GEMM for plain Linear layers. A wrapped layer (a LoRA adapter,
    gte_model.lora) computes more than its .weight, so it is called."""
    if not all(type(m) is nn.Linear for m in (query, key, value)):
        return torch.cat([m(x) for m in (query, key, value)], dim=-1)
    weight = torch.cat([query.weight, key.weight, value.weight])
    return F.linear(x, weight, torch.cat([query.bias, key.bias, value.bias]))


def _post_norm_ffn(layer: nn.Module, a: Tensor) -> Tensor:
    """BERT's feed-forward: intermediate, then dense, dropout, LayerNorm(+ residual)."""
    ffn = layer.output
    return ffn.LayerNorm(apply_dropout(ffn.dense(layer.intermediate(a)), ffn.dropout.p, layer.training) + a)


def _bert_layer(layer: nn.Module, x: Tensor, packed: Packed, shared: None) -> Tensor:
    """One BertLayer (RobertaLayer, XLMRobertaLayer) on packed tokens [T, H] -> [T, H]."""
    attn, training = layer.attention.self, layer.training
    qkv = _qkv(attn.query, attn.key, attn.value, x)
    p = attn.dropout.p if training else 0.0
    o = attend(qkv, packed, attn.num_attention_heads, attn.attention_head_size, p, attn.scaling)  # [T, H]
    out = layer.attention.output  # BertSelfOutput: dense, dropout, LayerNorm(+ residual)
    return _post_norm_ffn(layer, out.LayerNorm(apply_dropout(out.dense(o), out.dropout.p, training) + x))


def _mpnet_bias(backbone: nn.Module, packed: Packed, x: Tensor) -> dict[int, Tensor]:
    """MPNet's relative-position bias per group width: {w: [heads, w, w]}, from its own compute_position_bias (which
    reads only the shape and device of its argument)."""
    widths = {width for *_, width in packed.groups}
    return {w: backbone.encoder.compute_position_bias(x.new_empty(1, w))[0] for w in widths}


def _mpnet_layer(layer: nn.Module, x: Tensor, packed: Packed, bias: dict[int, Tensor]) -> Tensor:
    """One MPNetLayer on packed tokens: scores / sqrt(d) + relative bias; o, dropout, LayerNorm(+ residual)."""
    attn, training = layer.attention.attn, layer.training
    head_dim = attn.attention_head_size
    p = attn.dropout.p if training else 0.0
    o = attend(_qkv(attn.q, attn.k, attn.v, x), packed, attn.num_attention_heads, head_dim, p, head_dim**-0.5, bias)
    a = layer.attention.LayerNorm(apply_dropout(attn.o(o), layer.attention.dropout.p, training) + x)
    return _post_norm_ffn(layer, a)


# ---- ModernBERT: RoPE, pre-norm, GLU, alternating local / global attention -----------------------------------------
def _modernbert_embed(backbone: nn.Module, packed: Packed) -> Tensor:
    emb = backbone.embeddings
    return apply_dropout(emb.norm(emb.tok_embeddings(packed.input_ids)), emb.drop.p, backbone.training)


def _modernbert_rope(backbone: nn.Module, packed: Packed, x: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """cos, sin [T, d] per layer type, from the backbone's rotary module at each token's position in its row."""
    rope = {}
    for layer_type in set(backbone.config.layer_types):
        cos, sin = backbone.rotary_emb(x, packed.position_ids[None], layer_type)  # [1, T, d] each
        rope[layer_type] = (cos[0], sin[0])
    return rope


def _modernbert_layer(layer: nn.Module, x: Tensor, packed: Packed, rope: dict) -> Tensor:
    """One ModernBertEncoderLayer on packed tokens [T, H] -> [T, H]."""
    attn, training = layer.attn, layer.training
    heads, head_dim = attn.config.num_attention_heads, attn.head_dim
    q, k, v = attn.Wqkv(layer.attn_norm(x)).view(-1, 3, heads, head_dim).unbind(1)  # [T, heads, d] each
    cos, sin = rope[layer.attention_type]
    q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
    qkv = torch.stack((q, k, v), 1).view(x.shape[0], -1)  # [T, 3H]
    # the padded forward's mask for a local layer: |query - key| <= config.sliding_window (local_attention // 2)
    window = attn.config.sliding_window if attn.sliding_window is not None else None
    p = attn.attention_dropout if training else 0.0
    o = attend(qkv, packed, heads, head_dim, p, head_dim**-0.5, window=window)
    x = x + apply_dropout(attn.Wo(o), attn.attention_dropout, training)
    mlp = layer.mlp
    value, gate = mlp.Wi(layer.mlp_norm(x)).chunk(2, dim=-1)
    return x + mlp.Wo(apply_dropout(mlp.act(value) * gate, mlp.drop.p, training))


def _no_shared(backbone: nn.Module, packed: Packed, x: Tensor) -> None:
    return None


def _identity(backbone: nn.Module, x: Tensor) -> Tensor:
    return x


def _encoder_layers(backbone: nn.Module) -> nn.ModuleList:
    return backbone.encoder.layer


_BERT = Family(_bert_embed, _encoder_layers, _no_shared, _bert_layer, _identity)
_ROBERTA = Family(_after_padding_embed, _encoder_layers, _no_shared, _bert_layer, _identity)
_MPNET = Family(_after_padding_embed, _encoder_layers, _mpnet_bias, _mpnet_layer, _identity)
# backbone class name -> family (a remote-code backbone has its own class names: not packed)
FAMILIES: dict[str, Family] = {
    "BertModel": _BERT,
    "RobertaModel": _ROBERTA,
    "XLMRobertaModel": _ROBERTA,
    "MPNetModel": _MPNET,
    "ModernBertModel": Family(
        _modernbert_embed, lambda b: b.layers, _modernbert_rope, _modernbert_layer, lambda b, x: b.final_norm(x)
    ),
}
