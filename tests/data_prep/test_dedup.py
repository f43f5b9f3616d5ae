from __future__ import annotations

import numpy as np

from data_prep.dedup import DedupConfig, EvalIndex, Signer, decontaminate, exact_dedup, near_dedup
from data_prep.sources import stsb_test_sentences
from gte_model.core.text import canonical_hash

CFG = DedupConfig(num_perm=64, threshold=0.8, shingle_words=3)
BASE = ("the quick brown fox jumps over the lazy dog near the river bank while the farmer watches from the old "
        "wooden gate and the sun sets slowly behind the distant hills of the green valley")


def _arrays(pairs):
    signer = Signer(CFG.num_perm, CFG.seed, CFG.shingle_words)
    q_sig = signer.signatures([q for q, _ in pairs])
    p_sig = signer.signatures([p for _, p in pairs])
    q_hash = np.array([canonical_hash(q) for q, _ in pairs], dtype=np.uint64)
    p_hash = np.array([canonical_hash(p) for _, p in pairs], dtype=np.uint64)
    return q_sig, p_sig, q_hash, p_hash


def _unique_texts(n):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(500)]
    return [" ".join(rng.choice(words, 30)) for _ in range(n)]


def test_near_dedup_finds_planted_near_duplicates_within_and_across_sources():
    texts = _unique_texts(200)
    near = BASE.replace("farmer", "old farmer")  # one word inserted: Jaccard of 3-shingles ~0.9
    pairs = [(f"query {i}", t) for i, t in enumerate(texts)]
    pairs += [("title a", BASE), ("title b", near), ("title c", near)]
    sources = np.array([0] * 201 + [0, 1], dtype=np.int32)
    q_sig, p_sig, *_ = _arrays(pairs)
    by_positive = np.ones(len(pairs), bool)
    keep, counts = near_dedup(q_sig, p_sig, sources, by_positive, np.ones(len(pairs), bool), 2, CFG)
    assert np.flatnonzero(~keep).tolist() == [201, 202]  # the first occurrence (index 200) is kept
    assert counts[0].tolist() == [1, 0] and counts[1].tolist() == [0, 1]


def test_pair_mode_keeps_same_positive_with_a_different_query():
    pairs = [("an example sentence about rivers", BASE), ("a different example about hills", BASE)]
    q_sig, p_sig, *_ = _arrays(pairs)
    keep, _ = near_dedup(q_sig, p_sig, np.zeros(2, np.int32), np.zeros(2, bool), np.ones(2, bool), 1, CFG)
    assert keep.all()
    keep, _ = near_dedup(q_sig, p_sig, np.zeros(2, np.int32), np.ones(2, bool), np.ones(2, bool), 1, CFG)
    assert keep.tolist() == [True, False]


def test_exact_dedup_matches_canonical_text_and_counts_across_sources():
    pairs = [("q", "Some Text here."), ("q2", "some text HERE"), ("q", "some text here"), ("q3", "other text x")]
    _, _, q_hash, p_hash = _arrays(pairs)
    pair_hash = np.array([canonical_hash(q + " | " + p) for q, p in pairs], dtype=np.uint64)
    sources = np.array([0, 1, 0, 0], np.int32)
    keep, counts = exact_dedup(sources, p_hash, pair_hash, np.array([False, True, False, False]),
                               np.ones(4, bool), 2)
    assert keep.tolist() == [True, False, False, True]
    assert counts.tolist() == [[1, 0], [0, 1]]


def _exact_dedup_walk(source_ids, pos_hash, pair_hash, by_positive, keep, num_sources):
    """The definition, record by record: a record repeats the first earlier kept record with its key."""
    keep, counts = keep.copy(), np.zeros((num_sources, 2), np.int64)
    seen_pos, seen_pair = {}, {}
    for i in np.flatnonzero(keep):
        first = seen_pos.get(pos_hash[i]) if by_positive[i] else seen_pair.get(pair_hash[i])
        if first is not None:
            keep[i] = False
            counts[source_ids[i], 0 if first == source_ids[i] else 1] += 1
            continue
        seen_pos.setdefault(pos_hash[i], source_ids[i])
        seen_pair.setdefault(pair_hash[i], source_ids[i])
    return keep, counts


def test_exact_dedup_equals_the_record_by_record_walk_on_random_collisions():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 60))
        positive = rng.integers(0, 6, n)  # few distinct positives and queries: many repeats of every kind
        pair_hash = (positive * 10 + rng.integers(0, 3, n)).astype(np.uint64)  # a pair implies its positive
        args = (rng.integers(0, 3, n).astype(np.int32), positive.astype(np.uint64), pair_hash,
                rng.random(n) < 0.5, rng.random(n) < 0.85, 3)
        keep, counts = exact_dedup(*args)
        want_keep, want_counts = _exact_dedup_walk(*args)
        assert keep.tolist() == want_keep.tolist() and counts.tolist() == want_counts.tolist(), trial


def test_decontamination_removes_a_planted_stsb_test_sentence():
    test_sentences = stsb_test_sentences()
    planted = test_sentences[100]
    pairs = [(planted, "an unrelated positive text about gardens"),  # the exact test sentence as a query
             ("unrelated query", planted.rstrip(".") + " !"),  # a punctuation variant as a positive
             ("what is a fox", BASE)]
    q_sig, p_sig, q_hash, p_hash = _arrays(pairs)
    index = EvalIndex(CFG, threshold=0.8)
    e_hash = np.array([canonical_hash(t) for t in test_sentences], dtype=np.uint64)
    index.add(e_hash, Signer(CFG.num_perm, CFG.seed, CFG.shingle_words).signatures(test_sentences))
    train, dropped = decontaminate(index, q_hash, p_hash, q_sig, p_sig, np.zeros(3, np.int32), np.ones(3, bool), 1)
    assert train.tolist() == [False, False, True]
    assert dropped.tolist() == [2]
