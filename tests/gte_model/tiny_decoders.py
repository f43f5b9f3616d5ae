"""Tiny random decoder LLMs, Qwen3- and Llama-shaped, with a byte-level BPE vocabulary the test writes itself.

    make_tiny_decoder(folder, "qwen3")   -> folder: config.json, model.safetensors, tokenizer files

The tokenizers behave as the real ones do where it matters here: Qwen's appends nothing and pads with its EOS
(<|endoftext|>); Llama's prepends <s>, appends nothing and has no pad token. Neither adds the EOS that last-token
pooling reads: gte_model.decoder must.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import WORDS

DECODERS = ("qwen3", "llama")
_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-:;()"


def bpe_vocab(space: str, specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A BPE vocabulary and merges: the specials, single characters, then every word with and without the word-start
    marker `space`, built one character at a time (each prefix a token, each step a merge)."""
    tokens = dict.fromkeys([*specials, space, *_LETTERS])
    merges = []
    for word in dict.fromkeys(WORDS):
        for form in (word, space + word):
            for i in range(2, len(form) + 1):
                if form[:i] not in tokens:
                    tokens[form[:i]] = None
                    merges.append((form[: i - 1], form[i - 1]))
    return {t: i for i, t in enumerate(tokens)}, merges


def _tokenizer(kind: str):
    from transformers import LlamaTokenizer, Qwen2Tokenizer

    if kind == "qwen3":
        vocab, merges = bpe_vocab("Ġ", ["<|endoftext|>"])
        return Qwen2Tokenizer(vocab=vocab, merges=merges)
    vocab, merges = bpe_vocab("▁", ["<unk>", "<s>", "</s>"])
    return LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)


def make_tiny_decoder(folder: str | Path, kind: str, seed: int = 0) -> Path:
    """Write a 2-layer, 32-wide random decoder of `kind` (grouped-query attention: 4 heads, 2 key/value heads) and its
    tokenizer to folder (a plain Hugging Face folder, as a hub checkpoint is); returns folder."""
    from transformers import AutoModel, LlamaConfig, Qwen3Config

    folder = Path(folder)
    tokenizer = _tokenizer(kind)
    shape = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                 bos_token_id=tokenizer.bos_token_id)
    config = Qwen3Config(**shape) if kind == "qwen3" else LlamaConfig(**shape)
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
