"""Mining from vectors: the corpus index and the query chunks, each mapped by an engine (data_prep.engine), each
chunk searched and its rows given negatives by data_prep.negatives.

A chunk's rows depend on that chunk alone and an index shard on its docs alone, so the output depends on neither
the engine, nor the number of its workers, nor index.query_chunk.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from data_prep.engine import Engine, LocalEngine
from data_prep.knn import IndexConfig, Shard, build_shards, index_kind, search_shards
from data_prep.mine_config import NegativesConfig
from data_prep.negatives import select_negatives


def mine_embedded(
    queries: np.ndarray, docs: np.ndarray, pos_ids: np.ndarray, row_seeds: np.ndarray, doc_norm: np.ndarray,
    doc_hash: np.ndarray, neg: NegativesConfig, index_cfg: IndexConfig, blocked: dict[int, np.ndarray] | None = None,
    teacher: tuple[np.ndarray, np.ndarray] | None = None, engine: Engine | None = None,
) -> tuple[list[np.ndarray], Counter]:
    """Mine every row from vectors: queries [N, dim] (a row each), docs [n, dim] -> doc ids per row, counts.
    teacher: its query vectors [N, dt] (a row each) and doc vectors [n, dt], or None. The index shards are built
    by engine.map_build and the query chunks mined by engine.map_chunks (default: here, one after another)."""
    engine = engine or LocalEngine()
    shards = build_shards(docs, index_cfg, engine.map_build)
    counts: Counter = Counter({f"index_{index_kind(s.index)}": 1 for s in shards})
    counts["index_shards"] = len(shards)
    chunk = index_cfg.query_chunk
    tasks = ((queries[start : start + chunk], pos_ids[start : start + chunk], row_seeds[start : start + chunk],
              {r - start: h for r, h in (blocked or {}).items() if start <= r < start + chunk},
              None if teacher is None else teacher[0][start : start + chunk])
             for start in range(0, len(queries), chunk))
    t_docs = None if teacher is None else teacher[1]
    out: list[np.ndarray] = []
    for negs, c in engine.map_chunks(mine_chunk, tasks, shards, docs, doc_norm, doc_hash, neg, chunk, t_docs):
        out += negs
        counts += c
    return out, counts


def mine_chunk(task: tuple, shards: list[Shard], docs: np.ndarray, doc_norm: np.ndarray, doc_hash: np.ndarray,
               neg: NegativesConfig, query_chunk: int, teacher_docs: np.ndarray | None = None
               ) -> tuple[list[np.ndarray], Counter]:
    """One chunk of rows (queries [c, dim], pos_ids, row_seeds, blocked by chunk row, the teacher's query vectors
    [c, dt] or None) -> negatives, counts. teacher_docs: the teacher's doc vectors [n, dt] (None without one)."""
    queries, pos_ids, row_seeds, blocked, teacher_queries = task
    cands = search_shards(shards, queries, neg.rank_max + neg.search_pad, query_chunk)  # [c, shards x (max + pad)]
    vet = None if teacher_queries is None else (teacher_queries, teacher_docs)
    return select_negatives(queries, docs, cands, pos_ids, row_seeds, doc_norm, doc_hash, neg, blocked, vet)
