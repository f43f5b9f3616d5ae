"""A resumable on-disk cache of pair scores (a cross-encoder teacher's distillation labels): the pair analogue of
gte_model.embed_cache's vectors, in the same layout and written by the same shard helpers.

  <cache_dir>/<namespace>/index.json              {"format", "namespace": {...settings}, "shards": [...]}
  <cache_dir>/<namespace>/shard-00000.npy         [rows] float32 scores
  <cache_dir>/<namespace>/shard-00000.keys.npy    [rows, 32] uint8: the query text's digest, then the document's

The namespace is the scorer's settings (the model fingerprint, max_seq_len, ...), chosen by the caller; a pair is
looked up by the digests of its two texts (gte_model.core.text.text_digest). Keys are stored as raw bytes, not as
numpy "S32" strings, which drop trailing zero bytes. Missing pairs are scored in shards of `shard_size`, each written
atomically, so a killed run loses at most the shard in flight and a re-run scores only what is missing. One writer
per namespace at a time, as for the vector cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gte_model.core.errors import UserError
from gte_model.core.text import text_digest
from gte_model.embed_cache import DIGEST_BYTES, load_index, readable_shards, write_shard

SCORE_FORMAT = "gte-score-cache/1"
KEY_BYTES = 2 * DIGEST_BYTES  # query digest + document digest
PairScorer = Callable[[list[tuple[str, str]]], np.ndarray]  # (query, document) pairs -> [len] float32 scores


@dataclass
class Scored:
    """Scores of the requested pairs, in request order, and what the cache did to produce them."""

    scores: np.ndarray  # [N] float32
    computed_pairs: int  # pairs scored by the model in this call
    reused_pairs: int  # pairs served from the cache
    computed_shards: int


class ScoreCache:
    """One namespace of the score cache, opened once; every stored score is held in memory (4 bytes each, plus its
    key). persist=False: pairs missing from the cache are scored and kept in memory only (the other processes of
    a distributed run: one writer per namespace)."""

    def __init__(self, settings: dict, cache_dir: str | Path, shard_size: int, persist: bool = True) -> None:
        if not str(cache_dir):
            raise UserError("teacher.cache_dir is empty: set teacher.cache_dir=/some/folder")
        self.shard_size, self.persist = shard_size, persist
        self.namespace = hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=8).hexdigest()
        self.folder = Path(cache_dir) / self.namespace
        self.folder.mkdir(parents=True, exist_ok=True)
        self.index = load_index(self.folder, {"format": SCORE_FORMAT, "namespace": settings})
        self.known: dict[bytes, float] = {}  # pair key -> score
        for name, keys in readable_shards(self.folder, self.index):
            self._remember(keys, np.load(self.folder / f"{name}.npy"))

    def score(self, pairs: Sequence[tuple[str, str]], scorer: PairScorer) -> Scored:
        """Scores of `pairs`; those not cached are scored by `scorer`, one call per shard of missing pairs."""
        keys = [text_digest(q) + text_digest(d) for q, d in pairs]
        todo, pending = [], set()  # first occurrence of each missing pair, in request order
        for i, key in enumerate(keys):
            if key not in self.known and key not in pending:
                pending.add(key)
                todo.append(i)
        shards = [todo[start : start + self.shard_size] for start in range(0, len(todo), self.shard_size)]
        for chunk in shards:
            values = np.asarray(scorer([pairs[i] for i in chunk]), dtype=np.float32)  # [len(chunk)]
            if values.shape != (len(chunk),):
                raise ValueError(f"the scorer returned shape {values.shape} for {len(chunk)} pairs")
            chunk_keys = np.frombuffer(b"".join(keys[i] for i in chunk), dtype=np.uint8).reshape(-1, KEY_BYTES)
            if self.persist:
                write_shard(self.folder, self.index, values, chunk_keys)
            self._remember(chunk_keys, values)
        scores = np.array([self.known[key] for key in keys], dtype=np.float32)
        return Scored(scores, len(todo), len(pairs) - len(todo), len(shards))

    def _remember(self, keys: np.ndarray, values: np.ndarray) -> None:
        """keys [rows, KEY_BYTES] uint8, values [rows] float32."""
        raw = keys.tobytes()
        self.known.update((raw[row * KEY_BYTES : (row + 1) * KEY_BYTES], float(value))
                          for row, value in enumerate(values.tolist()))
