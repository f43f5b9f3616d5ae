"""Decoder LLMs as embedders (gte-Qwen2, Qwen3-Embedding, E5-mistral, NV-Embed, LLM2Vec): what differs from an encoder.

  prepare_decoder(backbone)        at load: no KV cache (an embedder never generates)
  append_eos(tokenizer, where)     at load with pooling=last: the tokenizer appends its EOS where it does not (Qwen's
                                   and Llama's do not), so every text ends on the token the pooling reads; one
                                   without a pad token pads with EOS (the attention mask tells them apart)
  set_bidirectional(backbone)      attention both ways (model.bidirectional; NV-Embed, LLM2Vec): the config's
                                   is_causal=false, which transformers' mask builder honours for every decoder

Both settings live in the files an export writes (add_eos_token and the post-processor in the tokenizer files,
is_causal and use_cache in config.json), so AutoTokenizer + AutoModel and sentence-transformers compute what training
did. Decoders train on packed tokens like encoders (gte_model.unpadded: causal within each text, or both ways), where
a text's last token is its row's last; padded, last-token pooling finds it under right or left padding
(gte_model.pooling).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from gte_model.assets import ModelLoadError


def is_decoder(backbone: nn.Module) -> bool:
    """True for a backbone built with causal self-attention (a decoder LLM), bidirectional or not."""
    return any(getattr(module, "is_causal", False) is True for module in backbone.modules())


def is_bidirectional(backbone: nn.Module) -> bool:
    """True for a decoder switched to attend both ways (set_bidirectional)."""
    return is_decoder(backbone) and getattr(backbone.config, "is_causal", True) is False


def set_bidirectional(backbone: nn.Module) -> None:
    """Let every token of a decoder attend to every other token of its text; ValueError for an encoder (it already
    does). No weight changes: the model is then trained to use it (LLM2Vec adds an MLM-like stage; here the
    contrastive stages do)."""
    if not is_decoder(backbone):
        raise ValueError(f"{type(backbone).__name__} is an encoder: its attention already runs both ways; "
                         "bidirectional applies to decoder LLMs (Llama, Qwen, Mistral)")
    backbone.config.is_causal = False


def prepare_decoder(backbone: nn.Module) -> None:
    """A decoder builds no KV cache in its forward (an embedder never generates); an encoder is left as it is."""
    if is_decoder(backbone):
        backbone.config.use_cache = False


def append_eos(tokenizer, where: Path | str) -> None:
    """Make the tokenizer end every text with its EOS token (and pad with it when it has no pad token). A tokenizer
    without an EOS token, or one that already ends texts with it (RoBERTa's </s>), is left as it is: its last token is
    its own (BERT: [SEP]). ModelLoadError naming `where` when it has one but cannot be told to append it."""
    if tokenizer.eos_token_id is None:
        return
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    before = tokenizer("a")["input_ids"]
    if before[-1] == tokenizer.eos_token_id:
        return
    if hasattr(tokenizer, "add_eos_token"):  # transformers' fast tokenizers rebuild their post-processor from it
        if tokenizer.bos_token_id is not None and hasattr(tokenizer, "add_bos_token"):
            # ... and from add_bos_token, which a reloaded tokenizer may report False while its tokenizer.json adds
            # BOS (Llama's): keep what it does now
            tokenizer.add_bos_token = before[0] == tokenizer.bos_token_id
        tokenizer.add_eos_token = True
    if tokenizer("a")["input_ids"] != [*before, tokenizer.eos_token_id]:
        raise ModelLoadError(f"{where}: its {type(tokenizer).__name__} does not append its EOS token "
                             f"{tokenizer.eos_token!r} and cannot be told to (add_eos_token); pooling=last reads each "
                             "text's last token: use a tokenizer that appends EOS, or model.pooling=mean")
