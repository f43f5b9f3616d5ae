"""Pooling of token states into one vector per text. Pure tensor functions.

  mean  the mean over non-padding tokens (GTE, BERT-family encoders)
  cls   the first token
  last  each text's last real token (decoder LLMs: gte-Qwen2, Qwen3-Embedding, E5-mistral; the tokenizer appends EOS,
        gte_model.decoder). Right or left padding: the last position the attention mask keeps, as
        sentence-transformers' lasttoken pooling finds it
"""

from __future__ import annotations

import torch

POOLING_MODES = ("mean", "cls", "last")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Pool token states [B, T, H] into [B, H] (see the module docstring for the modes)."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last_positions(attention_mask)]
    if mode != "mean":
        raise ValueError(f"pooling={mode!r} is not supported; choose one of {POOLING_MODES}")
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    summed = (hidden * mask).sum(dim=1)  # [B, H]
    # clamp: an all-padding row (never produced by the tokenizer, but cheap to guard) gives 0, not NaN
    counts = mask.sum(dim=1).clamp(min=1e-9)  # [B, 1]
    return summed / counts


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """The index of each row's last kept position, [B, T] -> [B]: T - 1 under left padding, length - 1 under right
    padding (an all-padding row gives T - 1)."""
    width = attention_mask.shape[1]
    from_end = attention_mask.flip(1).to(torch.int32).argmax(dim=1)  # [B]: padding positions after the last kept one
    return width - 1 - from_end


def pool_packed(
    hidden: torch.Tensor, seq_index: torch.Tensor, lengths: torch.Tensor, starts: torch.Tensor, mode: str = "mean"
) -> torch.Tensor:
    """Pool packed token states [T, H] (row seq_index[t] owns token t) into [B, H]; see gte_model.packed."""
    if mode == "cls":
        return hidden[starts]
    if mode == "last":
        return hidden[starts + lengths - 1]  # packed rows hold no padding: a row's last token ends it
    if mode != "mean":
        raise ValueError(f"pooling={mode!r} is not supported; choose one of {POOLING_MODES}")
    summed = hidden.new_zeros(lengths.shape[0], hidden.shape[1]).index_add(0, seq_index, hidden)  # [B, H]
    return summed / lengths[:, None].to(hidden.dtype)
