"""Pooling of token states into one vector per text. Pure tensor functions."""

from __future__ import annotations

import torch

POOLING_MODES = ("mean", "cls")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Pool token states [B, T, H] into [B, H]: mean over non-padding tokens, or the first (CLS) token."""
    if mode == "cls":
        return hidden[:, 0]
    if mode != "mean":
        raise ValueError(f"pooling={mode!r} is not supported; choose one of {POOLING_MODES}")
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    summed = (hidden * mask).sum(dim=1)  # [B, H]
    # clamp: an all-padding row (never produced by the tokenizer, but cheap to guard) gives 0, not NaN
    counts = mask.sum(dim=1).clamp(min=1e-9)  # [B, 1]
    return summed / counts


def pool_packed(
    hidden: torch.Tensor, seq_index: torch.Tensor, lengths: torch.Tensor, starts: torch.Tensor, mode: str = "mean"
) -> torch.Tensor:
    """Pool packed token states [T, H] (row seq_index[t] owns token t) into [B, H]; see gte_model.packed."""
    if mode == "cls":
        return hidden[starts]
    if mode != "mean":
        raise ValueError(f"pooling={mode!r} is not supported; choose one of {POOLING_MODES}")
    summed = hidden.new_zeros(lengths.shape[0], hidden.shape[1]).index_add(0, seq_index, hidden)  # [B, H]
    return summed / lengths[:, None].to(hidden.dtype)
