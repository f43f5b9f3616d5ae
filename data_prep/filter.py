"""Consistency filtering (E5, nomic-embed): keep a pair only if a trained model ranks its positive in the top-k
for its query among a pool of other documents of the same source.

  from data_prep.filter import FilterConfig, consistency_filter
  result = consistency_filter(queries, positives, "all-MiniLM-L6-v2", FilterConfig(top_k=2), sources=sources)
  kept = [pair for pair, keep in zip(pairs, result.keep) if keep]

Per source: the pool is a seeded sample of `pool_size` unique positives of that source (0 = all of them). For each
pair the rank of its positive = the number of pool documents scoring strictly higher for its query, skipping the
positive itself and every positive of the same query (also after case/whitespace folding). Keep iff rank < top_k.
Vectors go through the same on-disk cache and faiss code as `gte mine` (gte_model.embed_cache, data_prep.knn), so
filtering and mining with one model embed each text once. The decision for a pair depends only on its source's
data and the seed, never on row order, chunking or threads.

`gte mine` runs it on the train pairs right before mining when `filter.enabled=true` (FilterConfig below).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.knn import IndexConfig, build_index, exact_scores, pair_scores, search
from gte_model import load_model
from gte_model.core.config import bounded
from gte_model.core.text import content_hash64, fold_hash64, mix64
from gte_model.embed_cache import embed_cached, resolve_prompt
from gte_model.embed_config import EmbedConfig


@dataclass
class FilterConfig:
    """Consistency filter settings (an optional step of `gte mine`)."""

    enabled: bool = False  # run the filter at all
    model: str = "all-MiniLM-L6-v2"  # an already-trained embedder: preset name, packaged name or folder
    trust_remote_code: bool = False  # run the model folder's own code (config.json auto_map): read it first
    # keep a pair iff fewer than top_k pool docs outscore its positive (E5 and nomic used 2)
    top_k: int = bounded(2, ge=1, hint="2 keeps a positive ranked first or second")
    # pool docs per source, a seeded sample of its unique positives; 0 = all of them
    pool_size: int = bounded(0, ge=0, hint="0 = all")
    max_blocked: int = bounded(64, ge=0)  # extra neighbours fetched to step over the query's own positives
    seed: int = 0  # the seed of the pool sample
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    index: IndexConfig = field(default_factory=IndexConfig)


@dataclass
class FilterResult:
    keep: np.ndarray  # [N] bool, in input order
    rank: np.ndarray  # [N] int: pool docs scoring above the positive (capped at top_k)
    stats: dict  # {source: {"pairs", "kept", "dropped"}, "total": {...}}


def consistency_filter(
    queries: Sequence[str],
    positives: Sequence[str],
    model,
    cfg: FilterConfig | None = None,
    *,
    sources: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
) -> FilterResult:
    """Which (queries[i], positives[i]) pairs to keep.

    model: a GTEModel, or a name/folder for gte_model.load_model. sources: a source name per pair (pools never
    mix sources); None = one pool for all. cache_dir: embedding cache (default cfg.embed.cache_dir; if both are
    empty, a temporary folder that is deleted afterwards).
    """
    cfg = cfg or FilterConfig()
    if len(queries) != len(positives) or (sources is not None and len(sources) != len(queries)):
        raise ValueError(f"queries ({len(queries)}), positives ({len(positives)}) and sources "
                         f"({'None' if sources is None else len(sources)}) must have one entry per pair")
    if isinstance(model, (str, Path)):
        model = load_model(model, trust_remote_code=cfg.trust_remote_code, trust_flag="filter.trust_remote_code=true")
    rank = np.zeros(len(queries), dtype=np.int64)
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sources if sources is not None else [""] * len(queries)):
        groups.setdefault(s, []).append(i)
    with tempfile.TemporaryDirectory(prefix="gte-filter-") as tmp:
        root = Path(cache_dir or cfg.embed.cache_dir or tmp)
        for rows in groups.values():
            idx = np.asarray(rows)
            rank[idx] = _rank_group([queries[i] for i in rows], [positives[i] for i in rows], model, cfg, root)
    keep = rank < cfg.top_k
    stats = {s or "all": _count(keep[np.asarray(r)]) for s, r in groups.items()}
    stats["total"] = _count(keep)
    return FilterResult(keep, np.minimum(rank, cfg.top_k), stats)


def _count(keep: np.ndarray) -> dict:
    return {"pairs": int(len(keep)), "kept": int(keep.sum()), "dropped": int((~keep).sum())}


def _rank_group(queries: list[str], positives: list[str], model, cfg: FilterConfig, root: Path) -> np.ndarray:
    """[n] rank of each pair's positive among its group's pool."""
    docs = list(dict.fromkeys(positives))
    pool = np.arange(len(docs))
    if 0 < cfg.pool_size < len(docs):  # seeded sample, independent of order: smallest hashed priorities
        pool = np.sort(np.argsort(mix64(content_hash64(docs) ^ mix64(cfg.seed)), kind="stable")[: cfg.pool_size])
    doc_id = {t: i for i, t in enumerate(docs)}
    pos_ids = np.array([doc_id[p] for p in positives], dtype=np.int64)
    uniq_q = list(dict.fromkeys(queries))
    q_index = {q: i for i, q in enumerate(uniq_q)}
    q_row = np.array([q_index[q] for q in queries], dtype=np.int64)
    doc_vecs = embed_cached(model, docs, cfg.embed, resolve_prompt(model, cfg.embed.doc_prompt, "document"), root)
    q_vecs = embed_cached(model, uniq_q, cfg.embed, resolve_prompt(model, cfg.embed.query_prompt, "query"), root)
    return _ranks(q_vecs.vectors, doc_vecs.vectors, q_row, pos_ids, pool, fold_hash64(docs), cfg)


def _ranks(q_vecs: np.ndarray, doc_vecs: np.ndarray, q_row: np.ndarray, pos_ids: np.ndarray, pool: np.ndarray,
           norm: np.ndarray, cfg: FilterConfig) -> np.ndarray:
    """q_vecs [u, dim] unique queries, doc_vecs [d, dim], q_row/pos_ids [n] per pair -> [n] ranks."""
    pos_score = pair_scores(q_vecs[q_row], doc_vecs, pos_ids)  # [n]
    # The query's own positives (folded) must not count against it: collect them per unique query.
    own: dict[int, set[int]] = {}
    for qi, p in zip(q_row.tolist(), pos_ids.tolist()):
        own.setdefault(qi, set()).add(int(norm[p]))
    own_arr = {qi: np.array(sorted(h), dtype=np.uint64) for qi, h in own.items()}
    index = build_index(doc_vecs[pool], cfg.index)
    depth = min(len(pool), cfg.top_k + min(cfg.max_blocked, max(len(h) for h in own.values())))
    cand = search(index, q_vecs, depth, cfg.index.query_chunk)  # [u, depth] pool positions
    cand = np.where(cand >= 0, pool[np.maximum(cand, 0)], -1)  # -> doc ids
    scores = exact_scores(q_vecs, doc_vecs, cand)  # [u, depth]
    counted = (cand >= 0) & (scores > -np.inf)
    for qi, hashes in own_arr.items():
        counted[qi] &= ~np.isin(norm[np.maximum(cand[qi], 0)], hashes)
    return ((scores[q_row] > pos_score[:, None]) & counted[q_row]).sum(axis=1)  # [n]
