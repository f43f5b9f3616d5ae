"""Exact and near-duplicate removal (datasketch MinHash + MinHashLSH) and decontamination against evaluation texts.

Texts are compared in canonical form (gte_model.core.text.canonical: lower-cased word characters). Exact dedup
hashes that form (core.text.canonical_hash); near dedup MinHashes its word n-gram shingles (a text shorter than n
words is one shingle, so short texts match only when equal). Signatures are uint32 arrays computed once per text
(in worker processes) and kept in one matrix, so the index and the candidate check never re-read text. Decisions
are taken in record order in one process: the first record of a duplicate group is kept, whatever `num_proc`
computed the signatures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from gte_model.core.config import bounded
from gte_model.core.text import canonical

SCHEME = "affine32"


@dataclass
class DedupConfig:
    exact: bool = True  # drop pairs whose canonical text hash was seen before
    near: bool = True  # drop MinHash-LSH near-duplicates
    # MinHash permutations: 64 keeps the index small and the hashing fast
    num_perm: int = bounded(64, ge=1, hint="64 is the default")
    # Jaccard similarity of word shingles at or above which two texts are near-duplicates
    threshold: float = bounded(0.8, gt=0, le=1)
    shingle_words: int = bounded(3, ge=1, hint="3 is the default")  # word n-gram size of the shingles
    seed: int = 1  # MinHash permutation seed (not the split seed: signatures stay comparable across runs)
    # Per-source override of what must match: "pair" (query and positive) or "positive" (the positive alone).
    match: dict[str, str] = field(default_factory=dict)


def shingles(text: str, n: int) -> list[bytes]:
    words = canonical(text).split() or [text.strip().lower()]
    if len(words) <= n:
        return [" ".join(words).encode()]
    return list(dict.fromkeys(" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)))


class Signer:
    """MinHash signatures as uint32 arrays; one instance per process (the permutations are built once)."""

    def __init__(self, num_perm: int, seed: int, shingle_words: int) -> None:
        self.template = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME)
        self.shingle_words = shingle_words

    def signature(self, text: str) -> np.ndarray:
        self.template.clear()
        self.template.update_batch(shingles(text, self.shingle_words))
        return self.template.hashvalues.astype(np.uint32)  # [num_perm]

    def signatures(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.template.num_perm), dtype=np.uint32)  # [N, num_perm]
        for i, text in enumerate(texts):
            out[i] = self.signature(text)
        return out


def lean(signature: np.ndarray, seed: int) -> LeanMinHash:
    return LeanMinHash(seed=seed, hashvalues=signature.astype(np.uint32), scheme=SCHEME)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """MinHash estimate of the Jaccard similarity of two signatures."""
    return float(np.mean(a == b))


def near_match(later: int, earlier: int, q_sig: np.ndarray, p_sig: np.ndarray, by_positive: np.ndarray,
               threshold: float) -> bool:
    """Whether record `later` near-duplicates record `earlier`: positives alike and, in pair mode, queries too."""
    if similarity(p_sig[later], p_sig[earlier]) < threshold:
        return False
    return bool(by_positive[later]) or similarity(q_sig[later], q_sig[earlier]) >= threshold


def lsh_bands(cfg: DedupConfig) -> tuple[int, int]:
    """(bands, rows per band) of the MinHash LSH that near dedup uses for cfg.threshold and cfg.num_perm."""
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    return lsh.b, lsh.r


def exact_dedup(source_ids: np.ndarray, pos_hash: np.ndarray, pair_hash: np.ndarray, by_positive: np.ndarray,
                keep: np.ndarray, num_sources: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop each record whose canonical positive (by_positive) or pair hash was seen earlier among kept records.

    -> (keep mask, counts [num_sources, 2]: drops whose first copy came from the same source / another source)

    The walk in record order, done with sorts (no per-record Python objects: 16 bytes a record, not ~200). A pair
    hash implies its positive hash, so every decision falls within the records of one positive: its first record
    r0 is kept; a later by_positive record meets r0 and is dropped; a later pair-mode record is kept only if no
    earlier kept record has its pair hash, and the only records ever kept are r0 and pair-mode ones. So the kept
    records are the first per pair hash among {pair-mode records} + {each positive's r0}.
    """
    keep = keep.copy()
    counts = np.zeros((num_sources, 2), dtype=np.int64)
    ids = np.flatnonzero(keep)
    pos, pair, by_pos = pos_hash[ids], pair_hash[ids], by_positive[ids].astype(bool)
    _, r0, pos_group = np.unique(pos, return_index=True, return_inverse=True)
    eligible = ~by_pos
    eligible[r0] = True
    candidates = np.flatnonzero(eligible)
    kept = np.zeros(len(ids), dtype=bool)
    kept[candidates[np.unique(pair[candidates], return_index=True)[1]]] = True
    dropped = np.flatnonzero(~kept)
    first = np.empty(len(dropped), dtype=np.int64)  # the kept record each dropped one repeats
    positive_mode = by_pos[dropped]
    first[positive_mode] = r0[pos_group[dropped[positive_mode]]]
    kept_ids = np.flatnonzero(kept)
    order = np.argsort(pair[kept_ids], kind="stable")
    where = np.searchsorted(pair[kept_ids][order], pair[dropped[~positive_mode]])
    first[~positive_mode] = kept_ids[order[where]]
    keep[ids[dropped]] = False
    src, first_src = source_ids[ids[dropped]], source_ids[ids[first]]
    np.add.at(counts, (src, np.where(src == first_src, 0, 1)), 1)
    return keep, counts


def near_dedup(q_sig: np.ndarray, p_sig: np.ndarray, source_ids: np.ndarray, by_positive: np.ndarray,
               keep: np.ndarray, num_sources: int, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """Drop records whose positive (and, in pair mode, query) near-duplicates an earlier kept record.

    The LSH index holds kept positives only; each candidate it returns is confirmed on the signatures.
    -> (keep mask, counts [num_sources, 2] as in `exact_dedup`)
    """
    keep = keep.copy()
    counts = np.zeros((num_sources, 2), dtype=np.int64)
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    for i in np.flatnonzero(keep):
        sketch = lean(p_sig[i], cfg.seed)
        duplicate_of = None
        for j in sorted(lsh.query(sketch)):
            if near_match(i, j, q_sig, p_sig, by_positive, cfg.threshold):
                duplicate_of = j
                break
        if duplicate_of is None:
            lsh.insert(int(i), sketch, check_duplication=False)
        else:
            keep[i] = False
            counts[source_ids[i], 0 if source_ids[i] == source_ids[duplicate_of] else 1] += 1
    return keep, counts


class EvalIndex:
    """Evaluation texts (STS-B test, held-out queries and positives): exact hashes + an LSH over their MinHashes."""

    def __init__(self, cfg: DedupConfig, threshold: float) -> None:
        self.cfg, self.threshold = cfg, threshold
        self.lsh = MinHashLSH(threshold=threshold, num_perm=cfg.num_perm)
        self.hashes: set[int] = set()
        self.sigs: list[np.ndarray] = []

    def add(self, hashes: np.ndarray, sigs: np.ndarray) -> None:
        for h, sig in zip(hashes, sigs):
            if int(h) in self.hashes:
                continue
            self.hashes.add(int(h))
            self.lsh.insert(len(self.sigs), lean(sig, self.cfg.seed), check_duplication=False)
            self.sigs.append(sig)

    def __len__(self) -> int:
        return len(self.sigs)

    def matches(self, h: int, sig: np.ndarray) -> bool:
        if int(h) in self.hashes:
            return True
        return any(similarity(sig, self.sigs[j]) >= self.threshold for j in self.lsh.query(lean(sig, self.cfg.seed)))


def decontaminate(index: EvalIndex, q_hash: np.ndarray, p_hash: np.ndarray, q_sig: np.ndarray, p_sig: np.ndarray,
                  source_ids: np.ndarray, train: np.ndarray, num_sources: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop training records whose query or positive matches an evaluation text. -> (train mask, drops per source)"""
    train = train.copy()
    counts = np.zeros(num_sources, dtype=np.int64)
    for i in np.flatnonzero(train):
        if index.matches(q_hash[i], q_sig[i]) or index.matches(p_hash[i], p_sig[i]):
            train[i] = False
            counts[source_ids[i]] += 1
    return train, counts
