"""`gte mine` per source: read its train rows, consistency-filter them (optional), sample the rows and the corpus,
embed both through the cache on the engine's encoder, mine (data_prep.mine_search) and write its shards.

Negatives come from the same source's documents, so a WordNet query never gets a GCIDE definition of the same word
as a "negative".
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from data_prep import paths
from data_prep.engine import Engine, LocalEngine
from data_prep.filter import consistency_filter
from data_prep.knn import exact_scores
from data_prep.mine_config import MineConfig, NegativesConfig
from data_prep.mine_io import PairRows, read_train, write_source
from data_prep.mine_search import mine_embedded
from data_prep.negatives import row_seeds_of
from gte_model import GTEModel, load_model
from gte_model.core.text import content_hash64, fold_hash64
from gte_model.embed_cache import Embedded, embed_cached, resolve_prompt
from gte_model.embed_config import EmbedConfig


def mine_one(tmp: Path, name: str, entry: dict, in_dir: Path, extra: list[str], model, cfg: MineConfig,
             cache_dir: Path, teacher: GTEModel | None, engine: Engine) -> tuple[dict, dict | None]:
    """Mine one source of in_dir (its manifest entry) into tmp -> (its stats, its manifest entry or None when no row
    was kept). extra: the extra corpus, added to its documents."""
    rows = read_train(in_dir, entry, name)
    stats: dict = {"train_rows": len(rows)}
    if cfg.filter.enabled and len(rows):
        rows, stats["filter"] = _apply_filter(rows, model, cfg, cache_dir)
    if not len(rows):
        why = "has no train rows" if not stats["train_rows"] else "lost every row to the consistency filter"
        print(f"gte mine: source {name}: {why}; left out of the output", file=sys.stderr)
        return {**stats, "queries": 0, "queries_mined": 0, "queries_dropped": 0, "queries_short": 0,
                "mean_negatives": 0.0, "skipped": why}, None
    # Candidates come from the whole source (or a seeded sample of it), not only the sampled queries' positives:
    # a bigger corpus holds harder negatives.
    corpus = sample_corpus(rows.positives, cfg.max_corpus_per_source, cfg.negatives.seed)
    rows = sample_rows(rows, cfg.max_queries_per_source, cfg.negatives.seed)
    negatives, scores, mined = mine_source(rows, [*corpus, *extra], model, cfg, cache_dir, teacher, engine)
    stats.update(mined)
    keep = np.array([len(n) >= cfg.negatives.min_negatives for n in negatives], dtype=bool)
    kept_lengths = [len(n) for n, k in zip(negatives, keep) if k]
    stats.update(queries_mined=int(keep.sum()), queries_dropped=int((~keep).sum()),
                 mean_negatives=round(float(np.mean(kept_lengths)) if kept_lengths else 0.0, 3))
    _warn_if_mostly_dropped(name, stats, cfg.negatives)
    if not keep.any():  # an empty shard would only break readers downstream: leave the source out, say so
        print(f"gte mine: source {name}: no query kept >= {cfg.negatives.min_negatives} negatives after the "
              "window/margin/ceiling filters; left out of the output (see mine_stats.json)", file=sys.stderr)
        return stats, None
    return stats, write_source(tmp, name, rows, negatives, keep, entry, in_dir, cfg.rows_per_shard, scores,
                               copy_heldout=paths.is_remote(cfg.input_dir))


def _warn_if_mostly_dropped(name: str, stats: dict, neg: NegativesConfig) -> None:
    """A source that keeps under half of its queries is almost always a model too weak to mine with (scores close
    to the positive's everywhere) or a too strict filter: say it loudly, with the counts and the keys to change
    (training refuses a source smaller than one batch, naming it)."""
    kept, queries = stats["queries_mined"], stats["queries"]
    if not kept or kept * 2 >= queries:  # none kept: the source is left out, which mine_one says
        return
    drops = " ".join(f"{r}={stats.get(f'dropped_{r}', 0):,}" for r in ("margin", "ceiling", "positive", "duplicate",
                                                                      "teacher") if f"dropped_{r}" in stats)
    fill = "" if neg.fill == "random" else ", set negatives.fill=random"
    print(f"gte mine: WARNING source {name}: kept {kept:,} of {queries:,} queries ({kept / queries:.1%}): the others "
          f"had fewer than negatives.min_negatives={neg.min_negatives} negatives left (window candidates dropped: "
          f"{drops}); is the model trained enough to mine with? lower negatives.margin={neg.margin}, raise "
          f"negatives.max_score={neg.max_score}, widen negatives.rank_max={neg.rank_max}{fill} or lower "
          "negatives.min_negatives", file=sys.stderr)


def _apply_filter(rows: PairRows, model, cfg: MineConfig, cache_dir: Path) -> tuple[PairRows, dict]:
    fmodel = model if cfg.filter.model == cfg.model else load_model(
        cfg.filter.model, trust_remote_code=cfg.filter.trust_remote_code, trust_flag="filter.trust_remote_code=true")
    result = consistency_filter(rows.queries, rows.positives, fmodel, cfg.filter, cache_dir=cache_dir)
    return rows.take(np.flatnonzero(result.keep)), result.stats["total"]


def sample_rows(rows: PairRows, cap: int, seed: int) -> PairRows:
    """At most `cap` rows (0 = all): those with the smallest seeded hash, kept in input order."""
    if cap <= 0 or len(rows) <= cap:
        return rows
    priority = row_seeds_of(rows.queries, rows.positives, seed + 1)
    return rows.take(np.sort(np.argsort(priority, kind="stable")[:cap]))


def sample_corpus(positives: list[str], cap: int, seed: int) -> list[str]:
    """The unique positives of a source, or the `cap` of them with the smallest seeded hash (0 = all)."""
    unique = list(dict.fromkeys(positives))
    if cap <= 0 or len(unique) <= cap:
        return unique
    priority = row_seeds_of(unique, unique, seed + 2)
    return [unique[i] for i in np.sort(np.argsort(priority, kind="stable")[:cap])]


def mine_source(rows: PairRows, extra: list[str], model, cfg: MineConfig, cache_dir: Path,
                teacher: GTEModel | None = None, engine: Engine | None = None) -> tuple[list, list | None, dict]:
    """Negative texts per row (a list each), the teacher's scores per row ([positive, *negatives]; None without a
    teacher) and this source's stats. Embedding, index shards and query chunks run on `engine` (default: here)."""
    engine = engine or LocalEngine()
    docs = list(dict.fromkeys([*rows.positives, *extra]))  # exact-unique, first-seen order
    doc_id = {t: i for i, t in enumerate(docs)}
    pos_ids = np.array([doc_id[p] for p in rows.positives], dtype=np.int64)
    uniq_q = list(dict.fromkeys(rows.queries))
    q_index = {q: i for i, q in enumerate(uniq_q)}
    q_rows = np.array([q_index[q] for q in rows.queries], dtype=np.int64)  # [N]: each row's unique query
    doc_emb, q_emb = _embed(model, cfg.embed, docs, uniq_q, cache_dir, engine)
    vectors = None
    if teacher is not None:  # the same cache: the teacher's namespace is its own
        t_docs, t_q = _embed(teacher, cfg.teacher, docs, uniq_q, cfg.teacher.cache_dir or cache_dir, engine)
        vectors = (t_q.vectors[q_rows], t_docs.vectors)
    doc_norm = fold_hash64(docs)
    neg_ids, counts = mine_embedded(q_emb.vectors[q_rows], doc_emb.vectors, pos_ids, row_seeds_of(
        rows.queries, rows.positives, cfg.negatives.seed), doc_norm, content_hash64(docs), cfg.negatives, cfg.index,
        _blocked_rows(rows.queries, doc_norm[pos_ids]), vectors, engine)
    lengths = np.array([len(n) for n in neg_ids])
    stats = {
        "corpus_docs": len(docs),
        "queries": len(rows),
        "index": "ivf" if counts.pop("index_ivf", 0) else "flat",
        "queries_short": int((lengths < cfg.negatives.k).sum()),
        "embedded_texts": doc_emb.computed_texts + q_emb.computed_texts,
        "cached_texts": doc_emb.reused_texts + q_emb.reused_texts,
        **{f"dropped_{r}": 0 for r in ("positive", "duplicate", "ceiling", "margin")},
        **{k: int(v) for k, v in counts.items() if k != "index_flat"},
    }
    if teacher is None:
        return [[docs[i] for i in ids] for ids in neg_ids], None, stats
    stats["teacher_embedded_texts"] = t_docs.computed_texts + t_q.computed_texts
    stats["dropped_teacher"] = stats.get("dropped_teacher", 0)
    scores = _teacher_scores(vectors, pos_ids, neg_ids, cfg.negatives.k)
    return [[docs[i] for i in ids] for ids in neg_ids], scores, stats


def _embed(model, embed_cfg: EmbedConfig, docs: list[str], queries: list[str], cache_dir: Path,
           engine: Engine) -> tuple[Embedded, Embedded]:
    """Docs and queries through the cache with the model's prompts (embed_cfg: mining's `embed` or `teacher`)."""
    encoder = engine.encoder(model)
    doc_emb = embed_cached(model, docs, embed_cfg, resolve_prompt(model, embed_cfg.doc_prompt, "document"),
                           cache_dir, encoder=encoder)
    q_emb = embed_cached(model, queries, embed_cfg, resolve_prompt(model, embed_cfg.query_prompt, "query"),
                         cache_dir, encoder=encoder)
    return doc_emb, q_emb


def _teacher_scores(vectors: tuple[np.ndarray, np.ndarray], pos_ids: np.ndarray, neg_ids: list[np.ndarray],
                    k: int) -> list[list[float]]:
    """float32, as stored: [teacher(q, positive), teacher(q, negative) ...] per row. vectors: the teacher's query
    vectors [N, dt] (a row each) and doc vectors [n, dt]."""
    ids = np.full((len(neg_ids), 1 + k), -1, dtype=np.int64)  # [N, 1 + k], -1 = no negative
    ids[:, 0] = pos_ids
    for r, negs in enumerate(neg_ids):
        ids[r, 1 : 1 + len(negs)] = negs
    table = exact_scores(vectors[0], vectors[1], ids).astype(np.float32)  # [N, 1 + k]
    return [row[: 1 + len(negs)].tolist() for row, negs in zip(table, neg_ids)]


def _blocked_rows(queries: list[str], pos_norm: np.ndarray) -> dict[int, np.ndarray]:
    """Rows whose query has several (folded-distinct) positives -> the folded hashes of all of them."""
    by_query: dict[str, set[int]] = {}
    for q, h in zip(queries, pos_norm.tolist()):
        by_query.setdefault(q, set()).add(h)
    return {r: np.array(sorted(by_query[q]), dtype=np.uint64) for r, q in enumerate(queries) if len(by_query[q]) > 1}
