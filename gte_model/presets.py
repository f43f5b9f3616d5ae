"""Size presets: builder functions that return a randomly initialised backbone config.

gte-small/base/large are BERT at the GTE paper's sizes; `tiny` is for tests and CPU smoke runs, `gte-mini` for
from-scratch runs (MLM, then stages 1 and 2) on a CPU. gte-modern-base is a
ModernBERT-base shape (RoPE, alternating local sliding-window / global attention, a GLU feed-forward, 8,192 positions),
the long-context kind of backbone GTE v1.5 moved to.
"""

from __future__ import annotations

from transformers import BertConfig, ModernBertConfig, PretrainedConfig

# name -> (layers, hidden, heads, intermediate)
_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (2, 32, 2, 64),
    "gte-mini": (4, 128, 2, 512),  # from-scratch runs a 2-core CPU moves in minutes (MLM then stages 1 and 2)
    "gte-small": (12, 384, 12, 1536),
    "gte-base": (12, 768, 12, 3072),
    "gte-large": (24, 1024, 16, 4096),
}
_MODERN = {
    "gte-modern-base": dict(
        num_hidden_layers=22,
        hidden_size=768,
        num_attention_heads=12,
        intermediate_size=1152,  # per GLU half: Wi is 768 -> 2 x 1152
        global_attn_every_n_layers=3,  # layers 0, 3, 6, ... attend globally, the others within local_attention
        local_attention=128,
        max_position_embeddings=8192,
        global_rope_theta=160_000.0,
        local_rope_theta=10_000.0,
    ),
}
PRESETS = (*_SIZES, *_MODERN)


def preset_config(
    name: str, vocab_size: int, max_position_embeddings: int | None = None, special_ids: dict[str, int] | None = None
) -> PretrainedConfig:
    """The backbone config of a size preset, for a tokenizer with `vocab_size` entries; special_ids: the tokenizer's
    pad/cls/sep ids as config keys (pad_token_id=0, ...). max_position_embeddings: the preset's own when None."""
    ids = dict(special_ids or {})
    if name in _MODERN:
        shape = dict(_MODERN[name])
        if max_position_embeddings:
            shape["max_position_embeddings"] = max_position_embeddings
        # ModernBERT's bos/eos are its cls/sep; its defaults are ids of its own 50k vocabulary
        ids.setdefault("bos_token_id", ids.get("cls_token_id"))
        ids.setdefault("eos_token_id", ids.get("sep_token_id"))
        return ModernBertConfig(vocab_size=vocab_size, **shape, **ids)
    if name not in _SIZES:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")
    layers, hidden, heads, intermediate = _SIZES[name]
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_position_embeddings or 512,
        **ids,
    )
