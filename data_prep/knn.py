"""Nearest-neighbour search over cached embeddings with faiss, shared by mining and consistency filtering.

- `build_index`: exact inner product (IndexFlatIP) for small corpora, IndexIVFFlat above `ivf_threshold` docs
  (nlist ~ 4*sqrt(n), k-means on a seeded sample), so a 10M-doc corpus never needs n x n work.
- `search`: queries go through faiss in chunks, so memory is O(chunk x k), never O(queries x corpus).
- `build_shards` / `search_shards` (`index.shards`): the corpus split into contiguous shards, one index each (built in
  Ray tasks under engine=ray); a query's candidates are every shard's top hits side by side, and the exact ranking
  below makes their union rank as one exact index would (an IVF shard is as approximate as any IVF index).
- `exact_scores`: candidate scores recomputed in float64 from the vectors, with a fixed summation order. faiss'
  BLAS-blocked scores can differ in the last bit with the thread count or the query-chunk shape; ranking on the
  recomputed scores (ties broken by document id) makes the output identical whatever the threads or chunks.

Threads: faiss uses OpenMP; `set_threads(n)` calls faiss.omp_set_num_threads (0 = leave faiss' default, which
is every core). Results do not depend on it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from gte_model.core.config import bounded


@dataclass
class IndexConfig:
    """How the corpus is indexed and searched."""

    # corpora with at least this many docs use IVF (approximate); smaller: exact
    ivf_threshold: int = bounded(200_000, ge=1)
    nlist: int = bounded(0, ge=0, hint="0 = automatic")  # IVF lists; 0 = 4*sqrt(n)
    nprobe: int = bounded(32, ge=1)  # IVF lists visited per query: higher = closer to exact, slower
    # k-means sample size = this x nlist (seeded), bounds IVF training time
    train_points_per_list: int = bounded(64, ge=1)
    query_chunk: int = bounded(4096, ge=1)  # queries per faiss call: bounds memory at query_chunk x candidates
    # faiss OpenMP threads; 0 = faiss default (all cores). Output does not depend on it
    num_threads: int = bounded(0, ge=0, hint="0 = automatic")
    seed: int = 0  # k-means seed and training-sample seed
    # contiguous corpus shards, one index each (ivf_threshold applies per shard); each query searches all of them
    shards: int = bounded(1, ge=1)


def set_threads(num_threads: int) -> None:
    if num_threads > 0:
        faiss.omp_set_num_threads(int(num_threads))


def build_index(docs: np.ndarray, cfg: IndexConfig) -> faiss.Index:
    """An inner-product index over L2-normalised doc vectors [n, dim] (inner product = cosine)."""
    docs = np.ascontiguousarray(docs, dtype=np.float32)
    n, dim = docs.shape
    if n < cfg.ivf_threshold:
        index = faiss.IndexFlatIP(dim)
        index.add(docs)
        return index
    # Automatic nlist also keeps >= 39 points per list (fewer gives poor k-means lists); an explicit one is obeyed.
    nlist = min(cfg.nlist, n) if cfg.nlist else max(1, min(int(4 * math.sqrt(n)), n // 39))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = int(cfg.seed) + 1234
    sample = min(n, nlist * cfg.train_points_per_list)
    rows = np.sort(np.random.default_rng(cfg.seed).choice(n, size=sample, replace=False))
    index.cp.max_points_per_centroid = cfg.train_points_per_list  # we already sampled; stop faiss resampling
    index.train(docs[rows])
    index.add(docs)
    index.nprobe = min(cfg.nprobe, nlist)
    return index


@dataclass
class Shard:
    """One shard's index over docs[offset : offset + index.ntotal]."""

    offset: int
    index: faiss.Index


def shard_ranges(n: int, shards: int) -> list[tuple[int, int]]:
    """[start, stop) of each of `shards` contiguous parts of n docs (sizes differ by at most one; none empty)."""
    shards = max(1, min(shards, n))
    bounds = [n * i // shards for i in range(shards + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def build_shards(docs: np.ndarray, cfg: IndexConfig, map_fn: Callable | None = None) -> list[Shard]:
    """One index per shard of docs [n, dim]. map_fn(fn, tasks) -> fn(task) per task in order (default: here)."""
    ranges = shard_ranges(len(docs), cfg.shards)
    build = functools.partial(build_index, cfg=cfg)
    indexes = (map_fn or map)(build, (docs[a:b] for a, b in ranges))
    return [Shard(a, index) for (a, _), index in zip(ranges, indexes)]


def search_shards(shards: list[Shard], queries: np.ndarray, k: int, query_chunk: int) -> np.ndarray:
    """Each shard's top-k per query as corpus ids, side by side: [q, sum of min(k, shard size)], -1 where a shard
    has fewer. One shard: `search` itself."""
    parts = []
    for shard in shards:
        ids = search(shard.index, queries, k, query_chunk)
        parts.append(np.where(ids >= 0, ids + shard.offset, -1) if shard.offset else ids)
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def index_kind(index: faiss.Index) -> str:
    return "ivf" if isinstance(index, faiss.IndexIVF) else "flat"


def search(index: faiss.Index, queries: np.ndarray, k: int, query_chunk: int) -> np.ndarray:
    """Ids of the top-k docs per query [q, k] int64 (-1 where the index has fewer), searched chunk by chunk."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, index.ntotal)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), query_chunk):
        _, ids[start : start + query_chunk] = index.search(queries[start : start + query_chunk], k)
    return ids


def exact_scores(queries: np.ndarray, docs: np.ndarray, ids: np.ndarray, block: int = 256) -> np.ndarray:
    """Cosine of each query [b, dim] with its candidate docs ids [b, r] -> [b, r] float64; -inf where id < 0.

    Products of float32 values are exact in float64 and numpy sums each row's `dim` terms in one fixed order,
    so a (query, doc) score does not depend on which other rows share the call.
    """
    out = np.full(ids.shape, -np.inf, dtype=np.float64)
    for start in range(0, len(ids), block):
        q = queries[start : start + block].astype(np.float64)  # [b, dim]
        idx = ids[start : start + block]
        d = docs[np.maximum(idx, 0)].astype(np.float64)  # [b, r, dim]
        s = (q[:, None, :] * d).sum(axis=-1)  # [b, r]
        out[start : start + block] = np.where(idx >= 0, s, -np.inf)
    return out


def pair_scores(queries: np.ndarray, docs: np.ndarray, doc_ids: np.ndarray) -> np.ndarray:
    """Cosine of query i with doc doc_ids[i] -> [b] float64, computed exactly like `exact_scores`."""
    return exact_scores(queries, docs, doc_ids[:, None])[:, 0]


def rank_candidates(queries: np.ndarray, docs: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-sort candidates [b, r] by exact score, highest first, ties by doc id -> (ids, scores) both [b, r]."""
    scores = exact_scores(queries, docs, ids)
    order = np.lexsort((ids, -scores), axis=-1)  # last key is primary: score desc, then id asc
    return np.take_along_axis(ids, order, axis=-1), np.take_along_axis(scores, order, axis=-1)
