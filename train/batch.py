"""One process's share of a training batch, and the one place its layout is written down.

Texts are encoded flat as [queries | positives | negatives], negatives row-major ([b][K] -> b*K); `Batch.split`
cuts the embedding matrix of that flat list back into queries [b, H], positives [b, H] and negatives [b, K, H].
Everything that builds ids, embeddings or duplicate hashes for a batch goes through this class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gte_model.core.text import text_hashes

Tokenize = Callable[[Sequence[str], str, str], list[list[int]]]  # (texts, "query" | "document", source) -> ids


@dataclass
class Batch:
    """negatives [b][K] (empty lists when K == 0). ids: with pretokenized data, the token ids in flat order."""

    source: str
    rows: list[int]
    queries: list[str]
    positives: list[str]
    negatives: list[list[str]]
    ids: list[list[int]] | None = None

    @property
    def size(self) -> int:
        return len(self.queries)

    @property
    def num_negatives(self) -> int:
        return len(self.negatives[0]) if self.negatives else 0

    def documents(self) -> list[str]:
        """Positives, then negatives row-major: every text encoded with the document prompt."""
        return self.positives + [n for negs in self.negatives for n in negs]

    def token_ids(self, tokenize: Tokenize) -> list[list[int]]:
        """Ids in flat order; queries and documents each with their own prompt and max length."""
        if self.ids is not None:  # data.pretokenize: fetched with the rows
            return self.ids
        return tokenize(self.queries, "query", self.source) + tokenize(self.documents(), "document", self.source)

    @staticmethod
    def flat_ids(query_ids: list, positive_ids: list, negative_ids: list[list]) -> list[list[int]]:
        """Pretokenized columns -> ids in flat order (negative_ids [b][K])."""
        return [*query_ids, *positive_ids, *(x for row in negative_ids for x in row)]

    def split(self, emb: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Embeddings in flat order [b*(2+K), H] -> queries [b, H], positives [b, H], negatives [b, K, H] or None."""
        b, k = self.size, self.num_negatives
        if emb.shape[0] != b * (2 + k):
            raise AssertionError(f"{emb.shape[0]} embeddings for a batch of {b} rows with {k} negatives each")
        negatives = emb[2 * b :].reshape(b, k, -1) if k else None
        return emb[:b], emb[b : 2 * b], negatives

    def hashes(self) -> dict[str, Tensor]:
        """Exact-text hashes (raw texts: a prompt does not make a duplicate a negative) as int64 tensors:
        q_hash [b], d_hash [b], and neg_hash [b, K] when there are negatives."""
        out = {"q_hash": _hash_tensor(self.queries), "d_hash": _hash_tensor(self.positives)}
        if self.num_negatives:
            flat = [n for negs in self.negatives for n in negs]
            out["neg_hash"] = _hash_tensor(flat).view(self.size, -1)
        return out


def _hash_tensor(texts: Sequence[str]) -> Tensor:
    return torch.from_numpy(text_hashes(texts).view("int64"))
