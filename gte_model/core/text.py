"""Text hashing and the text forms compared across the project; one name per meaning.

  text_hashes(texts)    exact text -> uint64 [N]: the duplicate mask of the loss (same text = false negative)
  canonical(text)       lower-case word characters only: the form dedup and decontamination compare
  canonical_hash(text)  uint64 of canonical(text): exact dedup
  fold(text)            case-folded, whitespace collapsed: the form under which mining calls two documents the same
All hashes are blake2b, so they agree across processes and runs (Python's hash() is salted per process).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"\w+")


def hash64(text: str) -> int:
    """Unsigned 64-bit blake2b of a string's UTF-8 bytes."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def text_hashes(texts: Sequence[str]) -> np.ndarray:
    """[N] uint64 hash of each exact text (view as int64 for torch)."""
    return np.fromiter((hash64(t) for t in texts), dtype=np.uint64, count=len(texts))


def canonical(text: str) -> str:
    """Lower-case word characters only: the form compared by exact dedup and the identical-sides check."""
    return " ".join(_WORD.findall(text.lower()))


def canonical_hash(text: str) -> int:
    return hash64(canonical(text))


def fold(text: str) -> str:
    """The form under which two texts count as the same document: case-folded, whitespace collapsed."""
    return " ".join(text.casefold().split())
