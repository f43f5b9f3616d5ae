"""Hard-negative mining: the selection rules against a brute-force reference, the end-to-end command on a tiny
pairs dir (determinism across threads and chunk sizes, IVF, re-runs) and the resumable embedding cache."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_prep.mine import MineConfig, NegativesConfig, main, mine
from data_prep.mine_io import PairRows
from data_prep.mine_sources import sample_corpus, sample_rows
from data_prep.negatives import select_negatives
from gte_model.core.config import ConfigError, load_config
from gte_model.core.record import StaleOutput
from gte_model.core.text import content_hash64, fold, fold_hash64
from gte_model.embed_cache import embed_cached
from gte_model.embed_config import EmbedConfig
from gte_model.export import export_model
from tests.data_prep.helpers import mine_config, read_rows, sentences


# ---- helpers ---------------------------------------------------------------------------------------------------
def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# ---- selection rules (pure) -----------------------------------------------------------------------------------
def brute_force_ranking(q: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = q.astype(np.float64) @ docs.astype(np.float64).T  # [b, n]
    order = np.lexsort((np.broadcast_to(np.arange(len(docs)), scores.shape), -scores), axis=-1)
    return order, scores


def test_selection_equals_brute_force_window_margin_and_ceiling_rules():
    docs, q = unit_vectors(300, 8, 0), unit_vectors(40, 8, 1)
    neg = NegativesConfig(k=200, rank_min=2, rank_max=60, margin=0.05, max_score=0.7, strategy="top", fill="none")
    order, scores = brute_force_ranking(q, docs)
    pos = np.where(np.arange(40) % 2 == 0, order[:, 0], np.random.default_rng(2).integers(0, 300, size=40))
    texts = [f"doc {i}" for i in range(300)]
    got, counts = select_negatives(q, docs, order[:, :80], pos, np.zeros(40, np.uint64), fold_hash64(texts),
                                   content_hash64(texts), neg)
    for row in range(40):
        window = order[row, 2:60]
        s = scores[row]
        expected = [d for d in window if d != pos[row] and s[d] <= 0.7 and s[d] <= s[pos[row]] - 0.05]
        assert got[row].tolist() == expected
    assert counts["dropped_margin"] > 0 and counts["dropped_ceiling"] > 0


def test_random_strategy_samples_k_survivors_seeded_by_row_only():
    docs, q = unit_vectors(200, 8, 3), unit_vectors(30, 8, 4)
    pos = np.arange(30)
    neg = NegativesConfig(k=3, rank_min=0, rank_max=50, margin=-5.0, max_score=5.0)
    order, _ = brute_force_ranking(q, docs)
    texts = [f"doc {i}" for i in range(200)]
    seeds = content_hash64([f"row {i}" for i in range(30)])
    full, _ = select_negatives(q, docs, order[:, :60], pos, seeds, fold_hash64(texts), content_hash64(texts), neg)
    # The same rows in another chunk composition (reversed, half) get the same negatives.
    half, _ = select_negatives(q[15:][::-1], docs, order[15:, :60][::-1], pos[15:][::-1], seeds[15:][::-1],
                               fold_hash64(texts), content_hash64(texts), neg)
    assert [h.tolist() for h in half[::-1]] == [f.tolist() for f in full[15:]]
    assert all(len(f) == 3 and len(set(f.tolist())) == 3 for f in full)
    assert any(f.tolist() != order[i, :4][order[i, :4] != i][:3].tolist() for i, f in enumerate(full))  # not top


def test_selection_never_returns_the_positive_its_folded_duplicate_or_other_positives_of_the_query():
    docs, q = unit_vectors(50, 8, 5), unit_vectors(1, 8, 6)
    docs[7] = docs[3] = q[0]  # the positive (3), its duplicate (7), both at the very top
    texts = [f"doc {i}" for i in range(50)]
    texts[7] = "  DOC 3 "
    norm = fold_hash64(texts)
    order, _ = brute_force_ranking(q, docs)
    neg = NegativesConfig(k=49, rank_min=0, rank_max=50, margin=-5.0, max_score=5.0)  # margin/ceiling off
    got, counts = select_negatives(q, docs, order, np.array([3]), np.zeros(1, np.uint64), norm, content_hash64(texts),
                                   neg, blocked={0: np.array([norm[3], norm[11]], dtype=np.uint64)})
    assert not {3, 7, 11} & set(got[0].tolist())
    assert len(got[0]) == 47 and counts["dropped_positive"] == 3


def test_random_fill_gives_rows_with_an_empty_window_safe_random_negatives():
    docs, q = unit_vectors(400, 8, 7), unit_vectors(20, 8, 8)
    order, scores = brute_force_ranking(q, docs)
    pos = order[:, 200]  # every positive far below the window: the margin drops every window candidate
    texts = [f"doc {i}" for i in range(400)]
    texts[int(order[0, 350])] = texts[int(pos[0])].upper()  # a folded duplicate of row 0's positive
    norm = fold_hash64(texts)
    seeds = content_hash64([f"row {i}" for i in range(20)])
    args = (q, docs, order[:, :60], pos, seeds, norm, content_hash64(texts))
    neg = NegativesConfig(k=3, rank_min=1, rank_max=50, margin=0.05, max_score=0.99, fill="none")
    dropped, _ = select_negatives(*args, neg)
    assert all(len(d) == 0 for d in dropped)  # fill="none": these rows would be left out
    neg.fill = "random"
    filled, counts = select_negatives(*args, neg)
    assert counts["filled_rows"] == 20
    for row, ids in enumerate(filled):
        assert len(ids) == 3 and len({norm[i] for i in ids.tolist()}) == 3
        assert norm[pos[row]] not in {norm[i] for i in ids.tolist()}  # never the positive nor its duplicate
        assert all(scores[row, i] <= scores[row, pos[row]] - 0.05 for i in ids.tolist())
    again, _ = select_negatives(q[::-1], docs, order[::-1, :60], pos[::-1], seeds[::-1], norm, content_hash64(texts),
                                neg)
    assert [a.tolist() for a in again[::-1]] == [f.tolist() for f in filled]  # seeded by the row, not its position


# ---- end to end ----------------------------------------------------------------------------------------------
def test_mined_triples_exclude_positives_and_are_identical_across_threads_chunks_and_shards(tmp_path, pairs_dir,
                                                                                           tiny_model):
    # Margin and ceiling off so that only the positive rules keep the folded duplicate out.
    off = {"negatives.margin": -10.0, "negatives.max_score": 10.0, "negatives.rank_min": 0}
    a = mine(mine_config(tmp_path, pairs_dir, "a", **off, **{"index.num_threads": 1, "index.query_chunk": 7}),
             tiny_model)
    b = mine(mine_config(tmp_path, pairs_dir, "b", **off, **{"index.num_threads": 2, "index.query_chunk": 1000}),
             tiny_model)
    # three corpus shards, one exact index each: the union of their top hits ranks as the one index does
    sharded = mine(mine_config(tmp_path, pairs_dir, "sharded", **off, **{"index.shards": 3}), tiny_model)
    rows_a, rows_b = read_rows(a), read_rows(b)
    assert rows_a == rows_b == read_rows(sharded) and len(rows_a) == 93
    assert json.loads((sharded / "mine_stats.json").read_text())["sources"]["alpha"]["index_shards"] == 3
    positives_of: dict[str, set[str]] = {}
    for r in rows_a:
        positives_of.setdefault(r["query"], set()).add(fold(r["positive"]))
    for r in rows_a:
        assert len(r["negatives"]) == 4
        assert not {fold(n) for n in r["negatives"]} & positives_of[r["query"]]
        assert not {fold(n) for n in r["negatives"]} & {fold(r["positive"])}
    stats = json.loads((a / "mine_stats.json").read_text())
    assert stats["sources"]["alpha"]["dropped_positive"] > 0 and stats["sources"]["alpha"]["index"] == "flat"


def test_margin_ceiling_and_window_hold_on_real_encoder_scores(tmp_path, pairs_dir, tiny_model):
    cfg = mine_config(tmp_path, pairs_dir, "w", **{"negatives.margin": 0.02, "negatives.max_score": 0.9,
                                              "negatives.rank_min": 3, "sources": ["beta"], "negatives.fill": "none"})
    rows = read_rows(mine(cfg, tiny_model))
    corpus = sorted(set(pq.read_table(pairs_dir / "beta" / "train-00000.parquet").column("positive").to_pylist()))
    q = tiny_model.encode([r["query"] for r in rows], normalize=True).astype(np.float64)
    d = tiny_model.encode(corpus, normalize=True).astype(np.float64)
    p = tiny_model.encode([r["positive"] for r in rows], normalize=True).astype(np.float64)
    for i, r in enumerate(rows):
        s = d @ q[i]
        rank = {corpus[j]: n for n, j in enumerate(np.argsort(-s, kind="stable"))}
        pos_score = float(p[i] @ q[i])
        for neg in r["negatives"]:
            score = float(s[corpus.index(neg)])
            assert 3 - 1 <= rank[neg] < 20 + 1  # +-1: float ties between this reference and the float64 rescoring
            assert score <= 0.9 + 1e-3 and score <= pos_score - 0.02 + 1e-3  # 1e-3: the float16 cache


def test_ivf_index_is_used_above_the_threshold_and_stays_deterministic(tmp_path, pairs_dir, tiny_model):
    over = {"index.ivf_threshold": 50, "index.nlist": 4, "index.nprobe": 2, "negatives.margin": -1.0}
    a = mine(mine_config(tmp_path, pairs_dir, "a", **over, **{"index.num_threads": 1}), tiny_model)
    b = mine(mine_config(tmp_path, pairs_dir, "b", **over, **{"index.num_threads": 2, "index.query_chunk": 5}),
             tiny_model)
    assert json.loads((a / "mine_stats.json").read_text())["sources"]["alpha"]["index"] == "ivf"
    assert read_rows(a) == read_rows(b)


def test_rerun_on_finished_output_is_a_noop_and_other_settings_are_refused(tmp_path, pairs_dir, tiny_model):
    cfg = mine_config(tmp_path, pairs_dir, "a", sources=["beta"])
    out = mine(cfg, tiny_model)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    cfg.index.num_threads = 1  # does not change the output: still "done"
    mine(cfg, tiny_model)
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    cfg.negatives.k = 2
    with pytest.raises(StaleOutput, match="negatives.k"):
        mine(cfg, tiny_model)
    cfg.overwrite = True
    mine(cfg, tiny_model)
    assert max(len(r["negatives"]) for r in read_rows(out)) == 2


def test_output_manifest_points_heldout_and_beir_at_the_input_and_reports_stats(tmp_path, pairs_dir, tiny_model):
    cfg = mine_config(tmp_path, pairs_dir, "a", max_queries_per_source=20)
    out = mine(cfg, tiny_model)
    manifest = json.loads((out / "manifest.json").read_text())
    alpha = manifest["sources"]["alpha"]
    assert alpha["beir"] == str((pairs_dir / "beir" / "alpha").resolve())
    assert pq.read_table(alpha["heldout"]["files"][0]).num_rows == 3
    stats = manifest["mining"]["sources"]["alpha"]
    assert stats["queries"] == 20 and alpha["train"]["rows"] == stats["queries_mined"]
    for key in ("mean_negatives", "dropped_margin", "dropped_ceiling", "queries_short", "corpus_docs"):
        assert key in stats
    assert manifest["mining"]["peak_rss_mb"] > 0 and manifest["mining"]["wall_s"] >= 0


def test_query_cap_samples_the_same_rows_whatever_the_input_order():
    q, p = sentences(50, 7), sentences(50, 8)
    rows = PairRows(q, p, [str(i) for i in range(50)])
    perm = np.random.default_rng(0).permutation(50)
    a, b = sample_rows(rows, 10, seed=3), sample_rows(rows.take(perm), 10, seed=3)
    assert len(a) == 10 and set(a.keys) == set(b.keys)
    assert set(sample_rows(rows, 10, seed=4).keys) != set(a.keys)


def test_consistency_filter_flag_filters_before_mining(tmp_path, pairs_dir, tiny_model):
    cfg = mine_config(tmp_path, pairs_dir, "f", sources=["beta"], **{"filter.enabled": True, "filter.top_k": 1,
                                                                "filter.model": MineConfig().model})
    out = mine(cfg, tiny_model)
    stats = json.loads((out / "mine_stats.json").read_text())["sources"]["beta"]
    assert stats["filter"]["pairs"] == 30 and stats["queries"] == stats["filter"]["kept"] < 30


# ---- config and command line ----------------------------------------------------------------------------------
def test_config_rejects_an_empty_rank_window_with_a_fix():
    with pytest.raises(ConfigError, match="rank_min=50.*rank_max=10"):
        load_config(MineConfig, None, ["input_dir=a", "out_dir=b", "negatives.rank_min=50", "negatives.rank_max=10"])


def test_main_runs_the_yaml_config_with_overrides(tmp_path, pairs_dir, tiny_model, capsys):
    export_model(tiny_model, tmp_path / "tiny")
    assert main(["configs/mine.yaml", f"input_dir={pairs_dir}", f"out_dir={tmp_path / 'o'}",
                 f"model={tmp_path / 'tiny'}", "sources=[beta]", "embed.bf16=false", "negatives.k=2"]) == 0
    assert "beta: " in capsys.readouterr().out
    assert all(len(r["negatives"]) <= 2 for r in read_rows(tmp_path / "o"))


# ---- embedding cache ------------------------------------------------------------------------------------------
def test_embed_cache_recomputes_only_a_deleted_shard_and_reuses_across_orders(tmp_path, tiny_model):
    texts = sentences(50, 9)
    cfg = EmbedConfig(batch_size=8, max_seq_len=32, bf16=False, shard_size=16, cache_dir=str(tmp_path))
    first = embed_cached(tiny_model, texts, cfg)
    assert (first.computed_texts, first.computed_shards) == (50, 4)
    (tmp_path / first.namespace / "shard-00001.npy").unlink()  # as if the run died while writing it
    again = embed_cached(tiny_model, texts, cfg)
    assert (again.computed_texts, again.computed_shards, again.reused_texts) == (16, 1, 34)
    np.testing.assert_array_equal(again.vectors, first.vectors)
    shuffled = texts[::-1][:30]
    subset = embed_cached(tiny_model, shuffled, cfg)
    assert subset.computed_texts == 0
    np.testing.assert_array_equal(subset.vectors, first.vectors[::-1][:30])


def test_embed_cache_finds_a_text_whose_digest_ends_in_a_zero_byte_after_reload(tmp_path, tiny_model):
    from gte_model.core.text import text_digest

    zero = next(t for t in (f"word {i}" for i in range(100_000)) if text_digest(t).endswith(b"\0"))
    cfg = EmbedConfig(batch_size=8, max_seq_len=32, bf16=False, cache_dir=str(tmp_path))
    assert embed_cached(tiny_model, [zero, "the cat"], cfg).computed_texts == 2
    assert embed_cached(tiny_model, [zero, "the cat"], cfg).computed_texts == 0  # a new process reads it back


def test_embed_cache_never_mixes_prompts_or_models(tmp_path, tiny_model):
    from tests.conftest import make_tiny_model

    cfg = EmbedConfig(batch_size=8, max_seq_len=32, bf16=False, cache_dir=str(tmp_path))
    base = embed_cached(tiny_model, ["the cat"], cfg)
    assert embed_cached(tiny_model, ["the cat"], cfg, prefix="query: ").computed_texts == 1
    (tmp_path / "other").mkdir()
    other = make_tiny_model(tmp_path / "other", seed=1)
    assert embed_cached(other, ["the cat"], cfg).namespace != base.namespace


def test_model_fingerprint_changes_when_weights_are_updated_in_place(tiny_model):
    import torch

    from gte_model.fingerprint import model_fingerprint

    before = model_fingerprint(tiny_model)
    assert model_fingerprint(tiny_model) == before
    with torch.no_grad():
        next(tiny_model.parameters()).add_(1e-3)  # what an optimizer step does
    assert model_fingerprint(tiny_model) != before


def test_corpus_sample_is_seeded_unique_and_capped():
    positives = [f"doc {i % 50}" for i in range(120)]
    full = sample_corpus(positives, 0, seed=0)
    assert full == list(dict.fromkeys(positives))
    some = sample_corpus(positives, 10, seed=0)
    assert len(some) == 10 and len(set(some)) == 10 and set(some) <= set(full)
    assert sorted(some) == sorted(sample_corpus(list(reversed(positives)), 10, seed=0))  # order-independent
    assert some != sample_corpus(positives, 10, seed=1)
