"""Texts -> token ids for training: each role (query, document) with its own prompt and max length.

One callable serves the on-the-fly path (train.loop tokenises every step's texts) and `data.pretokenize=true`
(train.data.PairsData.pretokenize tokenises every train split once into the Arrow cache), so both give the same ids.
It holds the tokenizer only, not the model, so datasets can ship it to worker processes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class RoleTokenizer:
    tokenizer: object  # a transformers tokenizer (the model's)
    query_prompt: str
    doc_prompt: str
    query_max_len: int
    doc_max_len: int
    source_prompts: dict[str, dict[str, str]] = field(default_factory=dict)  # data.prompts: {source: {role: p}}

    def __call__(self, texts: Sequence[str], role: str, source: str = "") -> list[list[int]]:
        """Token ids per text (special tokens included, truncated, unpadded); role is "query" or "document";
        source picks its own prompt from source_prompts when it has one for the role."""
        if role == "query":
            prompt, limit = self.query_prompt, self.query_max_len
        elif role == "document":
            prompt, limit = self.doc_prompt, self.doc_max_len
        else:
            raise ValueError(f"role={role!r}: expected 'query' or 'document'")
        prompt = self.source_prompts.get(source, {}).get(role, prompt)
        enc = self.tokenizer([prompt + t for t in texts], truncation=True, max_length=int(limit), padding=False)
        return enc["input_ids"]

    def key(self) -> str:
        """What the ids depend on: the tokenizer (its full serialisation) and the prompts and max lengths."""
        tok = self.tokenizer
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is not None:  # minus the truncation/padding state, which every call with max_length rewrites
            vocab = json.dumps(
                {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
            )
        else:
            vocab = json.dumps(sorted(tok.get_vocab().items()))
        settings = [self.query_prompt, self.doc_prompt, self.query_max_len, self.doc_max_len, type(tok).__name__]
        if self.source_prompts:  # absent from older keys, so their caches stay valid
            settings.append({s: dict(sorted(r.items())) for s, r in sorted(self.source_prompts.items())})
        return hashlib.sha256((vocab + json.dumps(settings)).encode()).hexdigest()
