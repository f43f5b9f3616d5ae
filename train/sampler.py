"""Which rows make up each global batch: one source per batch, sources mixed by n^alpha, exact resume.

`SourceBatchSampler.batch_at(step)` is a pure function of (source sizes, global batch size, alpha, seed, step):
every rank computes the same batch without communicating, and a resumed run calls batch_at(start_step) and gets
what the uninterrupted run got. Nothing is loaded: the caller maps (source, row index) to its on-disk rows.

1. The source of step s: block b = s // BLOCK of source choices is drawn at once from a counter-based generator
   (numpy Philox) keyed by (seed, b), with p_i = n_i^alpha / sum_j n_j^alpha (GTE: alpha = 0.5; 0 is uniform,
   1 proportional to size).
2. The position within the source: c = how many earlier steps chose the same source (per-block counts are
   cached, so a cold call at step 10^6 costs ~16 block draws). Batch c of a source is batch c % B_i of pass
   c // B_i over it, B_i = n_i // global_batch_size (the tail of each pass that cannot fill a batch is left to
   later passes, which are shuffled differently). One epoch (train.epochs) is sum_i B_i steps: epoch_steps.
3. The rows: positions [j*G, (j+1)*G) of a pseudo-random permutation of range(n_i) keyed by (seed, source, pass).
   The permutation is a keyed Feistel network with cycle walking, evaluated only at the G positions needed: a
   bijection (no row repeats within a pass) that never materialises n_i indices, so memory is O(G) whatever the
   corpus size.

A source with fewer rows than the global batch can never fill a batch (batches do not mix sources): it is an
error at construction, with the source named, rather than silently skipped.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np

from gte_model.core.mixing import GTE_ALPHA, mixing_probabilities
from gte_model.core.text import splitmix64_finalise

BLOCK = 1 << 16  # source choices drawn per generator call
_ROUNDS = 6  # Feistel rounds: 4 make a pseudo-random permutation, 6 mix small domains better
_U64 = np.uint64


class SourceBatchSampler:
    """One source per global batch, drawn with p_i proportional to n_i^alpha; deterministic in (seed, step)."""

    def __init__(self, source_sizes: dict[str, int], global_batch_size: int, alpha: float = GTE_ALPHA, seed: int = 0):
        _validate(source_sizes, global_batch_size, alpha, seed)
        self.names = sorted(source_sizes)  # sorted: the dict's order must not change the data order
        self.sizes = np.array([int(source_sizes[s]) for s in self.names], dtype=np.int64)
        self.global_batch_size = int(global_batch_size)
        self.alpha = float(alpha)
        self.seed = int(seed)
        self._p = mixing_probabilities(self.sizes, self.alpha)
        self._cdf = np.cumsum(self._p)
        self._cdf[-1] = 1.0  # guard rounding: every uniform draw in [0, 1) lands on a source
        self._prefix = [np.zeros(len(self.names), dtype=np.int64)]  # _prefix[b]: counts per source before block b
        self._block = lru_cache(maxsize=4)(self._draw_block)

    def probabilities(self) -> dict[str, float]:
        """p_i = n_i^alpha / sum_j n_j^alpha per source."""
        return {name: float(p) for name, p in zip(self.names, self._p)}

    def batch_at(self, step: int) -> tuple[str, list[int]]:
        """(source, the global batch's row indices within that source) for global step `step` (0-based)."""
        src, count = self._locate(step)
        pass_no, j = divmod(count, batches_per_pass(int(self.sizes[src]), self.global_batch_size))
        positions = np.arange(j * self.global_batch_size, (j + 1) * self.global_batch_size, dtype=np.uint64)
        rows = _permute(positions, int(self.sizes[src]), self._round_keys(src, pass_no))
        return self.names[src], rows.astype(np.int64).tolist()

    def pass_at(self, step: int) -> tuple[str, int]:
        """(source, pass number over that source) of step `step`: the epoch to log."""
        src, count = self._locate(step)
        return self.names[src], count // batches_per_pass(int(self.sizes[src]), self.global_batch_size)

    def local(self, indices: list[int], rank: int, world: int) -> list[int]:
        """This rank's contiguous slice of a global batch."""
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank={rank} must be in [0, world={world}) and world >= 1")
        if self.global_batch_size % world:
            raise ValueError(
                f"global_batch_size={self.global_batch_size} does not divide by {world} processes; every rank needs "
                f"an equal share: use a multiple of {world}"
            )
        if len(indices) != self.global_batch_size:
            raise ValueError(f"got {len(indices)} indices, expected a global batch of {self.global_batch_size}")
        b = self.global_batch_size // world
        return list(indices[rank * b : (rank + 1) * b])

    # ---- internals ----------------------------------------------------------------------------------------
    def _draw_block(self, block: int) -> np.ndarray:
        """Source indices of steps [block*BLOCK, (block+1)*BLOCK): a pure function of (seed, block)."""
        rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([self.seed, block, 0])))
        return np.searchsorted(self._cdf, rng.random(BLOCK), side="right").astype(np.int64)

    def _locate(self, step: int) -> tuple[int, int]:
        """(source index, how many earlier steps drew that source)."""
        if step < 0:
            raise ValueError(f"step={step} must be >= 0")
        block, offset = divmod(int(step), BLOCK)
        while len(self._prefix) <= block:  # extend the cumulative counts up to this block
            b = len(self._prefix) - 1
            self._prefix.append(self._prefix[b] + np.bincount(self._block(b), minlength=len(self.names)))
        choices = self._block(block)
        src = int(choices[offset])
        return src, int(self._prefix[block][src]) + int(np.count_nonzero(choices[:offset] == src))

    def _round_keys(self, src: int, pass_no: int) -> np.ndarray:
        # The source's name (not its position in the list) keys its shuffles.
        name_key = int.from_bytes(hashlib.blake2b(self.names[src].encode(), digest_size=4).digest(), "little")
        return np.random.SeedSequence([self.seed, name_key, pass_no, 1]).generate_state(_ROUNDS, dtype=np.uint64)


def batches_per_pass(rows: int, global_batch_size: int) -> int:
    """Global batches in one pass over a source of `rows` rows: the tail that cannot fill one waits for the next
    (differently shuffled) pass."""
    return rows // global_batch_size


def epoch_steps(source_sizes: dict[str, int], global_batch_size: int) -> int:
    """Steps of one epoch (train.epochs): one pass over every source. With alpha = 1 the sampler takes each source
    through about one pass in that many steps; a smaller alpha gives small sources more passes and large ones fewer."""
    return sum(batches_per_pass(int(n), global_batch_size) for n in source_sizes.values())


def _permute(x: np.ndarray, n: int, keys: np.ndarray) -> np.ndarray:
    """A keyed bijection of range(n) evaluated at x (uint64 values < n): a Feistel network over the smallest
    even-width bit domain 2^(2h) >= n, with cycle walking (re-encrypt while >= n) to stay inside range(n). The
    domain is < 4n, so few walks are needed."""
    half = max(1, (max(n - 1, 1).bit_length() + 1) // 2)
    y = _feistel(x, half, keys)
    outside = y >= n
    while outside.any():
        y[outside] = _feistel(y[outside], half, keys)
        outside = y >= n
    return y


def _feistel(x: np.ndarray, half: int, keys: np.ndarray) -> np.ndarray:
    mask = _U64((1 << half) - 1)
    left, right = x >> _U64(half), x & mask
    for key in keys:
        left, right = right, left ^ (splitmix64_finalise(right ^ key) & mask)
    return (left << _U64(half)) | right


def _validate(source_sizes: dict[str, int], global_batch_size: int, alpha: float, seed: int) -> None:
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size={global_batch_size} must be >= 1")
    if not source_sizes:
        raise ValueError("source_sizes is empty: the sampler needs at least one data source")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1] (0 uniform over sources, 1 proportional to size)")
    if seed < 0:
        raise ValueError(f"seed={seed} must be >= 0")
    small = {name: n for name, n in source_sizes.items() if n < global_batch_size}
    if small:
        raise ValueError(
            f"sources {small} have fewer rows than global_batch_size={global_batch_size}; every batch comes from "
            "one source, so they could never fill one. Drop or merge them, or lower the global batch size"
        )
