"""Text hashing and the text forms compared across the project; one name per meaning.

  text_hashes(texts)     exact text -> uint64 [N]: the duplicate mask of the loss (same text = false negative)
  canonical(text)        lower-case word characters only: the form dedup and decontamination compare
  canonical_hash(text)   uint64 of canonical(text): exact dedup
  fold(text)             case-folded, whitespace collapsed: the form under which mining calls two documents the same
  text_digest(text)      16-byte digest: the embedding cache's key
  content_hash64(texts)  uint64 [N] from text_digest: the seed of mining's and filtering's sampling
  fold_hash64(texts)     content_hash64 of fold(text): "the same document" for mining and filtering
  mix64(x)               splitmix64 of uint64 values: seeded, order-free keys (sampling, LSH band keys)
  splitmix64_finalise(z) splitmix64's finaliser alone: mix64's last step, the sampler's Feistel round function
All hashes are blake2b, so they agree across processes and runs (Python's hash() is salted per process). Their
values are contracts: embedding-cache keys, dedup results, prep splits and mined negatives depend on them
(tests/data_prep/test_contracts.py pins them).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"\w+")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


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


def text_digest(text: str) -> bytes:
    """16-byte content digest of a text: the embedding cache's key (and the dedup key for exact duplicates)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def content_hash64(texts: Sequence[str]) -> np.ndarray:
    """[n] uint64: the first 8 bytes of each text's 16-byte digest (`text_digest`), the seed of sampling.

    Not hash64 (an 8-byte blake2b, another value): mined negatives and samples are keyed by this one, so changing it
    would change every mined output."""
    return np.array([int.from_bytes(text_digest(t)[:8], "little") for t in texts], dtype=np.uint64)


def fold_hash64(texts: Sequence[str]) -> np.ndarray:
    """[n] uint64 content hash of each text's folded form (`fold`): equal for the same document."""
    return content_hash64([fold(t) for t in texts])


def mix64(x: np.ndarray | int) -> np.ndarray:
    """splitmix64, elementwise on uint64: a seeded, order-free pseudo-random key per input value."""
    z = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return splitmix64_finalise(z + _GOLDEN)


def splitmix64_finalise(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 values: a cheap, well-mixing bijection (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):  # a 0-d input is a numpy scalar, whose overflow would warn
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))
