"""Negative selection, pure: vectors and ids in, doc ids out. The rules of `gte mine`, in the order applied:

  1. rank: a row's faiss candidates re-ranked by exact float64 scores, ties by doc id (data_prep.knn), so the
     order depends on neither threads nor chunking;
  2. window: keep ranks [negatives.rank_min, negatives.rank_max) (0-based; the positive counts as a rank): the top
     ranks are the likeliest unlabelled positives;
  3. drop, each candidate counted under its first reason (mine_stats.json `dropped_*`):
     positive  - folds (case/whitespace) to the row's positive or to another positive of the same query;
     duplicate - folds to a better-ranked candidate of the row;
     ceiling   - scores above negatives.max_score (a near-paraphrase);
     margin    - scores above (the positive's score - negatives.margin) (a likely false negative);
     teacher   - with a teacher: its score is at or above min(teacher_ratio x its positive score,
                 its positive score - teacher_margin) (`teacher_bars`);
  4. sample k of the survivors: strategy=random by a hashed priority of (row seed, doc text), strategy=top the
     best-ranked; returned in rank order. A row's seed comes from its own query and positive (`row_seeds_of`), so
     the choice depends on that row alone, never on chunking, worker count or row order;
  5. fill (negatives.fill=random): a row left with fewer than min_negatives gets random docs (seeded by the row)
     that pass the positive, duplicate, ceiling, margin and teacher rules.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from data_prep.knn import exact_scores, pair_scores, rank_candidates
from data_prep.mine_config import NegativesConfig
from gte_model.core.text import content_hash64, mix64


def row_seeds_of(queries: list[str], positives: list[str], seed: int) -> np.ndarray:
    """[N] uint64: a row's sampling seed, from its own text only (so order- and chunk-independent)."""
    return mix64(content_hash64([q + "\x1f" + p for q, p in zip(queries, positives)]) ^ mix64(seed))


def select_negatives(
    queries: np.ndarray,
    docs: np.ndarray,
    cand_ids: np.ndarray,
    pos_ids: np.ndarray,
    row_seeds: np.ndarray,
    doc_norm: np.ndarray,
    doc_hash: np.ndarray,
    neg: NegativesConfig,
    blocked: dict[int, np.ndarray] | None = None,
    teacher: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[list[np.ndarray], Counter]:
    """Negatives for b rows: queries [b, dim], docs [n, dim], faiss candidates cand_ids [b, r] (-1 = none),
    pos_ids [b], row_seeds [b] uint64, doc_norm / doc_hash [n] uint64 (folded-text / exact-text hashes),
    blocked {row: folded hashes of the other positives of that row's query}, teacher (its query vectors [b, dt],
    doc vectors [n, dt]) or None. -> doc ids per row (rank order), and counts of window candidates dropped per
    reason."""
    ids, scores = rank_candidates(queries, docs, cand_ids)  # 1. [b, r] best first, ties by id
    ids, scores = ids[:, neg.rank_min : neg.rank_max], scores[:, neg.rank_min : neg.rank_max]  # 2. [b, w]
    pos_score = pair_scores(queries, docs, pos_ids)  # [b]
    valid = ids >= 0
    bars = teacher_bars(teacher, pos_ids, neg)  # [b] or None
    drops = _drops(ids, scores, valid, pos_ids, pos_score, doc_norm, neg, blocked)  # 3.
    if bars is not None:
        drops["teacher"] = valid & (exact_scores(teacher[0], teacher[1], ids) >= bars[:, None])
    counts: Counter = Counter(window_candidates=int(valid.sum()))
    dropped = np.zeros_like(valid)
    for reason, mask in drops.items():  # each candidate is counted under its first reason only
        counts[f"dropped_{reason}"] += int((mask & ~dropped).sum())
        dropped |= mask
    chosen = _sample(ids, valid & ~dropped, row_seeds, doc_hash, neg)  # 4.
    if neg.fill == "random":  # 5.
        for row in (r for r, c in enumerate(chosen) if len(c) < neg.min_negatives):
            taken = {int(doc_norm[i]) for i in (*chosen[row].tolist(), int(pos_ids[row]))}
            taken |= {int(h) for h in (blocked or {}).get(row, ())}  # the query's other positives
            vet = None if bars is None else (teacher[0][row], teacher[1], bars[row])
            extra = _random_fill(queries[row], docs, pos_score[row], row_seeds[row], doc_norm, taken, neg, vet)
            chosen[row] = np.concatenate([chosen[row], extra[: neg.k - len(chosen[row])]])
            counts["filled_rows"] += 1
    return chosen, counts


def _drops(ids: np.ndarray, scores: np.ndarray, valid: np.ndarray, pos_ids: np.ndarray, pos_score: np.ndarray,
           doc_norm: np.ndarray, neg: NegativesConfig, blocked: dict[int, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Rule 3 without the teacher: reason -> [b, w] mask of the window candidates (ids, scores [b, w]) it drops,
    in the order reasons are counted."""
    norm = np.where(valid, doc_norm[np.maximum(ids, 0)], np.uint64(0))  # [b, w]
    is_pos = valid & (norm == doc_norm[pos_ids][:, None])
    for row, hashes in (blocked or {}).items():
        is_pos[row] |= valid[row] & np.isin(norm[row], hashes)
    return {
        "positive": is_pos,
        "duplicate": valid & _repeats(norm),
        "ceiling": valid & (scores > neg.max_score),
        "margin": valid & (scores > pos_score[:, None] - neg.margin),
    }


def teacher_bars(teacher: tuple[np.ndarray, np.ndarray] | None, pos_ids: np.ndarray,
                 neg: NegativesConfig) -> np.ndarray | None:
    """[b] the teacher score at or above which a candidate is too close to the positive to be a negative:
    min(teacher_ratio x teacher(q, positive), teacher(q, positive) - teacher_margin). None without a teacher."""
    if teacher is None:
        return None
    pos = pair_scores(teacher[0], teacher[1], pos_ids)  # [b]
    return np.minimum(neg.teacher_ratio * pos, pos - neg.teacher_margin)


def _random_fill(query: np.ndarray, docs: np.ndarray, pos_score: float, row_seed: np.uint64, doc_norm: np.ndarray,
                 taken: set[int], neg: NegativesConfig, vet: tuple | None = None) -> np.ndarray:
    """Up to k random doc ids (seeded by the row) scored below pos_score - margin and max_score (and, with
    vet = (teacher query vector, teacher docs, bar), scored below the bar by the teacher), none of them folding to
    a text in `taken` (the row's positives and negatives) or repeated: for a row whose window kept none."""
    rng = np.random.default_rng(int(row_seed))
    cand = rng.choice(len(docs), size=min(len(docs), 8 * neg.k + 32), replace=False)
    scores = exact_scores(query[None], docs, cand[None])[0]  # [c], as the window's scores
    vetoed = np.zeros(len(cand), dtype=bool)
    if vet is not None:
        vetoed = exact_scores(vet[0][None], vet[1], cand[None])[0] >= vet[2]
    out, seen = [], set(taken)
    for i, score, veto in zip(cand.tolist(), scores.tolist(), vetoed.tolist()):
        h = int(doc_norm[i])
        if h in seen or score > pos_score - neg.margin or score > neg.max_score or veto:
            continue
        seen.add(h)
        out.append(i)
        if len(out) == neg.k:
            break
    return np.array(out, dtype=np.int64)


def _sample(ids: np.ndarray, keep: np.ndarray, row_seeds: np.ndarray, doc_hash: np.ndarray,
            neg: NegativesConfig) -> list[np.ndarray]:
    """k of the kept window candidates ids [b, w] per row, returned in rank order."""
    if neg.strategy == "random":  # a hashed key per (row, doc): uniform without replacement, order-free
        priority = mix64(row_seeds[:, None] ^ doc_hash[np.maximum(ids, 0)])  # [b, w] uint64
    else:
        priority = np.broadcast_to(np.arange(ids.shape[1], dtype=np.uint64), ids.shape)
    priority = np.where(keep, priority, np.iinfo(np.uint64).max)
    pick = np.sort(np.argsort(priority, axis=1, kind="stable")[:, : neg.k], axis=1)  # [b, k] columns, rank order
    chosen, ok = np.take_along_axis(ids, pick, axis=1), np.take_along_axis(keep, pick, axis=1)
    return [c[m] for c, m in zip(chosen, ok)]


def _repeats(values: np.ndarray) -> np.ndarray:
    """[b, w] True where the value already appeared earlier in its row."""
    order = np.argsort(values, axis=1, kind="stable")  # equal values keep column order: the first stays unmarked
    ordered = np.take_along_axis(values, order, axis=1)
    rep_sorted = np.zeros(values.shape, dtype=bool)
    rep_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    out = np.empty_like(rep_sorted)
    np.put_along_axis(out, order, rep_sorted, axis=1)
    return out
