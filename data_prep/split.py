"""Train / held-out split by key: every record of a key lands on the same side, so no key is on both sides.

A key's position is a deterministic hash of (seed, key) mapped to [0, 1). Keys below `heldout_fraction` are
held-out candidates; with `max_heldout_queries`, candidates are taken in ascending hash order until the distinct
held-out queries of the source would exceed the cap, and the rest go to train (evaluation stays fast).
Keys at or above 1 - `dev_fraction` form the dev slice: rows training validates on and the pipeline makes its
choices on, at the other end of the hash range, so a dev key is never a held-out (test) key.
heldout_fraction=1.0 holds out every key, uncapped: the input becomes a test set.
The hash ignores the source name, so sources sharing keys (the two WordNet sources share synsets) split alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gte_model.core.config import bounded
from gte_model.core.text import hash64


@dataclass
class SplitConfig:
    # share of keys (per source) that may be held out; 1.0 = the whole input is a test set (every key held out,
    # max_heldout_queries ignored, no train rows: a BEIR set for `gte eval --data` or `gte run` eval.extra)
    heldout_fraction: float = bounded(0.02, ge=0, le=1)
    # cap on distinct held-out queries per source; None: no cap
    max_heldout_queries: int | None = bounded(1000, ge=0, hint="or null for no cap")
    # share of keys (per source) in the dev split (training's validation rows, never trained on, never a test set);
    # 0 = none (training then validates on nothing). heldout_fraction + dev_fraction must stay <= 1
    dev_fraction: float = bounded(0.0, ge=0, lt=1, hint="e.g. 0.02")


def key_hash(key: str, seed: int) -> int:
    """64-bit position of a key; the split side depends on this alone (and the per-source cap)."""
    return hash64(f"{seed}\x1f{key}")


def assign_dev(key_hashes: np.ndarray, candidates: np.ndarray, cfg: SplitConfig) -> np.ndarray:
    """Dev mask over one source's records: the keys whose hash lies in the top dev_fraction of the range."""
    if cfg.dev_fraction <= 0 or cfg.heldout_fraction >= 1:
        return np.zeros(len(key_hashes), dtype=bool)
    floor = np.uint64(min(int((1 - cfg.dev_fraction) * 2.0**64), 2**64 - 1))
    return candidates & (key_hashes >= floor)


def assign_heldout(key_hashes: np.ndarray, query_hashes: np.ndarray, candidates: np.ndarray,
                   cfg: SplitConfig) -> np.ndarray:
    """Held-out mask over one source's records. key_hashes/query_hashes: uint64 [N]; candidates: bool [N]
    (records still in play after dedup)."""
    if cfg.heldout_fraction >= 1:  # a test set: every key, uncapped
        return candidates.copy()
    heldout = np.zeros(len(key_hashes), dtype=bool)
    limit = np.uint64(min(int(cfg.heldout_fraction * 2.0**64), 2**64 - 1))
    pool = candidates & (key_hashes < limit)
    if not pool.any():
        return heldout
    idx = np.flatnonzero(pool)
    order = idx[np.lexsort((idx, key_hashes[idx]))]  # ascending key hash, record order within a key
    queries: set[int] = set()
    cap = cfg.max_heldout_queries
    start = 0
    while start < len(order):
        end = start
        while end < len(order) and key_hashes[order[end]] == key_hashes[order[start]]:
            end += 1
        group = order[start:end]  # all records of one key
        new = {int(query_hashes[i]) for i in group} - queries
        if cap is not None and len(queries) + len(new) > cap:
            break
        queries |= new
        heldout[group] = True
        start = end
    return heldout
