"""Masked-language-model pieces of the MLM stage (train.mlm): the masking rule, the prediction head, the loss.

BERT's rule, at the rate ModernBERT and mGTE pretrain with: each maskable token is picked with probability
`rate` (mlm.mask_rate, 0.30 by default; BERT used 0.15); of the picked ones 80% become [MASK], 10% a random token,
10% stay as they are. The model predicts the original token at every picked position and nowhere else, so the head
runs on the picked rows only (sparse prediction: ModernBERT's trick; the vocabulary projection is most of an MLM
step's cost at small hidden sizes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE = -100  # the target of a position that is not predicted (F.cross_entropy's ignore_index)
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the picked tokens: [MASK], a random token; the rest stay unchanged


def mask_tokens(ids: Tensor, maskable: Tensor, rate: float, mask_id: int, vocab_size: int,
                generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """ids [T] (long), maskable [T] (bool: not a special token) -> (inputs [T], targets [T]): targets hold the
    original id where a token was picked and IGNORE elsewhere. A pure function of its arguments and the generator."""
    picked = (torch.rand(ids.shape, generator=generator) < rate) & maskable  # [T]
    choice = torch.rand(ids.shape, generator=generator)  # [T]: which of the three replacements
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator)  # [T]
    inputs = ids.clone()
    inputs[picked & (choice < MASK_SHARE)] = mask_id
    swap = picked & (choice >= MASK_SHARE) & (choice < MASK_SHARE + RANDOM_SHARE)
    inputs[swap] = random_ids[swap]
    targets = torch.where(picked, ids, torch.full_like(ids, IGNORE))
    return inputs, targets


class MLMHead(nn.Module):
    """BERT's prediction head: dense -> GELU -> LayerNorm -> the word embeddings (tied, passed in) + a bias. It lives
    beside the encoder only while the MLM stage trains: the exported backbone leaves it out."""

    def __init__(self, hidden_size: int, vocab_size: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: Tensor, embeddings: Tensor) -> Tensor:
        """hidden [M, H], embeddings [V, H] -> logits [M, V]."""
        x = self.norm(F.gelu(self.dense(hidden)))  # [M, H]
        return x @ embeddings.T + self.bias  # [M, V]


def mlm_loss(logits: Tensor, targets: Tensor) -> tuple[Tensor, int]:
    """Mean cross-entropy over the predicted rows (fp32) and how many of them the argmax gets right.
    logits [M, V], targets [M] (no IGNORE left)."""
    loss = F.cross_entropy(logits.float(), targets)
    return loss, int((logits.argmax(-1) == targets).sum())


__all__ = ["IGNORE", "MASK_SHARE", "RANDOM_SHARE", "MLMHead", "mask_tokens", "mlm_loss"]
