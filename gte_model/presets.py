"""Size presets: builder functions that return a randomly initialised BERT config.

gte-small/base/large follow the GTE paper's sizes; `tiny` is for tests and CPU smoke runs.
"""

from __future__ import annotations

from transformers import BertConfig

# name -> (layers, hidden, heads, intermediate)
_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (2, 32, 2, 64),
    "gte-small": (12, 384, 12, 1536),
    "gte-base": (12, 768, 12, 3072),
    "gte-large": (24, 1024, 16, 4096),
}
PRESETS = tuple(_SIZES)


def preset_config(name: str, vocab_size: int, max_position_embeddings: int = 512) -> BertConfig:
    """The BertConfig of a size preset, for a tokenizer with `vocab_size` entries."""
    if name not in _SIZES:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")
    layers, hidden, heads, intermediate = _SIZES[name]
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_position_embeddings,
    )
