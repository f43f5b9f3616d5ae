"""Positive-aware mining with a teacher: no kept negative at or above its teacher bar (window and random fill), the
teacher's scores stored in the rows, its vectors cached where training reads them."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from data_prep.mine import NegativesConfig, mine
from data_prep.negatives import select_negatives, teacher_bars
from gte_model import load_model
from gte_model.core.text import content_hash64, fold_hash64
from gte_model.embed_cache import embed_cached
from gte_model.embed_config import TeacherConfig
from gte_model.export import export_model
from tests.conftest import make_tiny_model
from tests.data_prep.helpers import mine_config, read_rows
from tests.data_prep.test_mine import brute_force_ranking, unit_vectors


def test_no_negative_is_kept_at_or_above_the_teacher_bar_in_the_window_or_the_fill():
    docs, q = unit_vectors(300, 8, 0), unit_vectors(60, 8, 1)
    t_docs, t_q = unit_vectors(300, 6, 2), unit_vectors(60, 6, 3)
    order, _ = brute_force_ranking(q, docs)
    pos = order[:, 40]  # the student ranks the positive low: the margin empties many windows, the fill kicks in
    texts = [f"doc {i}" for i in range(300)]
    seeds = content_hash64([f"row {i}" for i in range(60)])
    for ratio, margin in ((0.95, 0.0), (0.5, 0.1), (1.0, 0.3)):
        neg = NegativesConfig(k=5, rank_min=0, rank_max=60, margin=0.0, max_score=1.0, teacher_ratio=ratio,
                              teacher_margin=margin)
        args = (q, docs, order[:, :70], pos, seeds, fold_hash64(texts), content_hash64(texts), neg)
        plain, _ = select_negatives(*args)
        vetted, counts = select_negatives(*args, teacher=(t_q, t_docs))
        bars = teacher_bars((t_q, t_docs), pos, neg)
        t_pos = (t_q * t_docs[pos]).sum(1)
        assert np.allclose(bars, np.minimum(ratio * t_pos, t_pos - margin))
        for row, ids in enumerate(vetted):
            scores = t_docs[ids].astype(np.float64) @ t_q[row].astype(np.float64)
            assert (scores < bars[row]).all(), (ratio, margin, row)
        assert counts["dropped_teacher"] > 0 and counts["filled_rows"] > 0
        assert any(set(p.tolist()) != set(v.tolist()) for p, v in zip(plain, vetted))  # the teacher changed some


def test_mining_with_a_teacher_stores_its_scores_and_caches_its_vectors(tmp_path, pairs_dir, tiny_model):
    (tmp_path / "t").mkdir()
    teacher_dir = export_model(make_tiny_model(tmp_path / "t", seed=7), tmp_path / "teacher")
    teacher = TeacherConfig(model=str(teacher_dir), batch_size=16, max_seq_len=32, bf16=False, shard_size=64)
    cfg = mine_config(tmp_path, pairs_dir, "mined", teacher=teacher,
                      **{"negatives.margin": -10.0, "negatives.max_score": 10.0, "negatives.teacher_ratio": 0.9})
    out = mine(cfg, tiny_model)
    rows = read_rows(out)
    assert rows and all(len(r["teacher_scores"]) == 1 + len(r["negatives"]) for r in rows)
    t = load_model(teacher_dir)
    cache = tmp_path / "cache-mined"  # embed.cache_dir: the teacher's namespace sits beside the student's
    for r in rows[:10]:
        q = embed_cached(t, [r["query"]], teacher, "", cache).vectors[0]
        docs = embed_cached(t, [r["positive"], *r["negatives"]], teacher, "", cache)
        assert docs.computed_texts == 0  # mining cached them: training's teacher lookups are hits
        scores = docs.vectors.astype(np.float64) @ q.astype(np.float64)
        np.testing.assert_allclose(r["teacher_scores"], scores, atol=1e-6)
        assert all(s < 0.9 * r["teacher_scores"][0] for s in r["teacher_scores"][1:])
    stats = json.loads((out / "mine_stats.json").read_text())["sources"]["alpha"]
    assert stats["dropped_teacher"] > 0 and stats["teacher_embedded_texts"] > 0
    schema = pq.read_schema(next(out.glob("alpha/train-*.parquet")))
    assert schema.field("teacher_scores").type.value_type == "float"


def test_a_cache_opened_without_persist_embeds_misses_in_memory_and_writes_nothing(tmp_path, tiny_model):
    from gte_model.embed_cache import VectorCache

    cfg = TeacherConfig(model="x", batch_size=8, max_seq_len=32, bf16=False, shard_size=4)
    writer = VectorCache(tiny_model, cfg, "", tmp_path)
    writer.embed(["one text", "two texts"])
    reader = VectorCache(tiny_model, cfg, "", tmp_path, persist=False)
    got = reader.embed(["two texts", "a new text", "more new words", "one text", "a new text"])
    assert got.computed_texts == 2 and got.reused_texts == 3
    assert sorted(p.name for p in reader.folder.glob("shard-*")) == ["shard-00000.keys.npy", "shard-00000.npy"]
    fresh = VectorCache(tiny_model, cfg, "", tmp_path / "other").embed(["a new text", "one text"]).vectors
    np.testing.assert_allclose(got.vectors[[1, 3]], fresh, atol=1e-3)  # float16 cache precision
