"""A cross-encoder teacher (teacher.kind=cross, GPL's pseudo-labels): its scores of each query's own candidates in
the loss (KL and MarginMSE against a hand reference), the resumable pair-score cache (gte_model.score_cache), a tiny
`gte train` that distils from a tiny random CrossEncoder written here, and the config refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_prep.mine_config import MineConfig
from gte_model.core.text import text_digest
from gte_model.embed_config import TeacherConfig
from gte_model.score_cache import ScoreCache
from tests.conftest import write_vocab
from tests.train.test_loss import batch
from tests.train.test_teacher_loss import hand_kl
from tests.train.tinydata import train_tiny, write_tiny_pairs
from train.config import TrainConfig
from train.data import PairsData
from train.loss import Teacher, contrastive_loss
from train.teacher import TeacherScores, fill_teacher_cache

T = 0.05


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory) -> Path:
    """A tiny random BertForSequenceClassification (num_labels=1) on the test vocabulary, saved by CrossEncoder."""
    from sentence_transformers import CrossEncoder
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    hf = tmp_path_factory.mktemp("cross-hf")
    write_vocab(hf)
    tokenizer = BertTokenizerFast.from_pretrained(str(hf), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    out = tmp_path_factory.mktemp("cross") / "model"
    CrossEncoder(str(hf), local_files_only=True).save(str(out))
    return out


def cos(a, b):
    return float(F.cosine_similarity(a, b, dim=0))


def test_kl_from_scores_is_the_hand_computed_kl_over_each_querys_own_candidates():
    q, d, neg, _ = batch(n=4, k=2)
    scores = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    w, tau = 0.7, 0.1
    teacher = Teacher(None, None, distill_weight=w, distill_temperature=tau, scores=scores)
    got = contrastive_loss(q, d, neg, kind="gte", temperature=T, teacher=teacher)
    plain = contrastive_loss(q, d, neg, kind="gte", temperature=T)
    kls = []
    for i in range(4):
        student = [cos(q[i], d[i])] + [cos(q[i], neg[i, m]) for m in range(2)]
        kls.append(hand_kl(student, scores[i].tolist(), tau))
    assert abs((got - plain).item() - w * sum(kls) / 4) < 1e-10


def test_margin_mse_from_scores_is_the_hand_computed_margin_error_in_logits():
    q, d, neg, _ = batch(n=3, k=2)
    scores = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    tau = 0.2
    teacher = Teacher(None, None, distill_weight=1.0, distill_temperature=tau, distill_kind="margin_mse",
                      scores=scores)
    got = contrastive_loss(q, d, neg, kind="infonce", temperature=T, teacher=teacher)
    plain = contrastive_loss(q, d, neg, kind="infonce", temperature=T)
    terms = []
    for i in range(3):
        gaps = [((cos(q[i], d[i]) - cos(q[i], neg[i, m])) - (scores[i, 0] - scores[i, 1 + m]).item()) / tau
                for m in range(2)]
        terms.append(sum(g * g for g in gaps) / 2)
    assert abs((got - plain).item() - sum(terms) / 3) < 1e-10


@pytest.mark.parametrize("kind", ["kl", "margin_mse"])
def test_scores_equal_to_the_teacher_cosines_give_the_vector_teachers_loss(kind):
    q, d, neg, _ = batch(n=4, k=2)
    tq, td, tneg, _ = batch(n=4, k=2, h=5, seed=1)
    unit = [F.normalize(x, dim=-1) for x in (tq, td, tneg)]
    scores = torch.cat([(unit[0] * unit[1]).sum(-1, keepdim=True), torch.einsum("nh,nkh->nk", unit[0], unit[2])], 1)
    settings = {"distill_weight": 1.0, "distill_temperature": 0.1, "distill_kind": kind}
    vectors = contrastive_loss(q, d, neg, temperature=T, teacher=Teacher(tq, td, tneg, **settings))
    from_scores = contrastive_loss(q, d, neg, temperature=T, teacher=Teacher(None, None, scores=scores, **settings))
    assert abs(vectors.item() - from_scores.item()) < 1e-12


def test_score_cache_finds_every_pair_again_after_a_reload_even_a_digest_ending_in_a_zero_byte(tmp_path):
    zero_ended = next(f"text {i}" for i in range(10_000) if text_digest(f"text {i}")[-1] == 0)
    pairs = [("query", zero_ended), (zero_ended, "document"), ("query", "document")]
    calls = []

    def scorer(chunk):
        calls.append(list(chunk))
        return np.array([len(a) + 0.5 * len(b) for a, b in chunk], dtype=np.float32)

    first = ScoreCache({"model": "m"}, tmp_path, shard_size=2).score(pairs, scorer)
    again = ScoreCache({"model": "m"}, tmp_path, shard_size=2).score(pairs + pairs[:1], scorer)
    assert len(calls) == 2 and (first.computed_pairs, first.computed_shards) == (3, 2)
    assert (again.computed_pairs, again.reused_pairs) == (0, 4)
    assert again.scores.tolist() == [*first.scores.tolist(), first.scores[0]]
    other = ScoreCache({"model": "other"}, tmp_path, shard_size=2).score(pairs[:1], scorer)
    assert other.computed_pairs == 1  # another model's namespace shares nothing


def test_pair_scores_are_cached_once_and_a_deleted_shard_is_scored_again_alone(tmp_path, cross_encoder):
    pairs_dir = write_tiny_pairs(tmp_path / "pairs")
    cfg = TeacherConfig(model=str(cross_encoder), kind="cross", max_seq_len=32, bf16=False, shard_size=100,
                        cache_dir=str(tmp_path / "cache"))
    data = PairsData(pairs_dir, num_negatives=2)
    total = sum(len(data.train_pairs(s)) for s in data.names)
    assert fill_teacher_cache(cfg, pairs_dir) == {"computed": total, "reused": 0}

    teacher = TeacherScores(cfg, tmp_path / "unused")
    scored = []
    predict = teacher.model.predict

    def counted(inputs, **kwargs):
        scored.append(len(inputs))
        return predict(inputs, **kwargs)

    teacher.model.predict = counted
    batches = [data.train_batch(source, list(range(8)), seed=0, step=5) for source in data.names]
    got = [teacher(b) for b in batches]
    assert scored == [] and all(g.shape == (8, 3) for g in got)  # a training batch never runs the teacher
    b = batches[0]
    direct = teacher.predict([(b.queries[0], b.positives[0]), *((b.queries[0], n) for n in b.negatives[0])])
    assert np.allclose(got[0][0].numpy(), direct, atol=1e-6)  # the cached score is the model's own

    folder = teacher.cache.folder
    index = json.loads((folder / "index.json").read_text())
    lost = index["shards"][1]
    (folder / f"{lost['name']}.npy").unlink()
    again = TeacherScores(cfg, tmp_path / "unused")
    scored.clear()
    predict = again.model.predict
    again.model.predict = counted
    result = again.cache.score([p for s in data.names for p in data.train_pairs(s)], again.predict)
    assert (result.computed_pairs, result.computed_shards, sum(scored)) == (lost["rows"], 1, lost["rows"])


def test_training_distils_from_a_cross_encoder_teacher(tmp_path, cross_encoder):
    pairs_dir = write_tiny_pairs(tmp_path / "pairs")
    common = ("data.num_negatives=2", "train.max_steps=2", "optim.warmup_steps=0")
    assert train_tiny(tmp_path / "plain", pairs_dir, *common) == 0
    assert train_tiny(tmp_path / "cross", pairs_dir, *common, "teacher.kind=cross", f"teacher.model={cross_encoder}",
                      "teacher.bf16=false", "loss.distill_weight=1", "loss.distill=margin_mse") == 0

    def losses(run: str) -> list[float]:
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    plain, cross = losses("plain"), losses("cross")
    assert len(plain) == len(cross) == 2 and all(c > p for c, p in zip(cross, plain))  # + a MarginMSE term >= 0
    cache = tmp_path / "cross" / "teacher_cache"
    assert list(cache.glob("*/shard-*.keys.npy"))  # the scores were cached


def test_cross_teacher_refuses_in_batch_distillation_and_guided_masking():
    cfg = TrainConfig()
    cfg.data.train_dir = "somewhere"
    cfg.teacher.model, cfg.teacher.kind = "cross-folder", "cross"
    cfg.loss.distill_weight, cfg.loss.distill_in_batch, cfg.loss.guide_margin = 1.0, True, 0.1
    errors = cfg.validate(world_size=1, zero_stage=0)
    assert any("loss.distill_in_batch=true" in e and "teacher.kind=cross" in e for e in errors)
    assert any("loss.guide_margin=0.1" in e and "teacher.kind=cross" in e for e in errors)
    cfg.loss.distill_in_batch, cfg.loss.guide_margin = False, -1.0
    assert not [e for e in cfg.validate(world_size=1, zero_stage=0) if "teacher.kind" in e]
    cfg.teacher.kind = "dual"
    assert any("teacher.kind" in e for e in cfg.validate(world_size=1, zero_stage=0))


def test_mining_refuses_a_cross_encoder_teacher():
    cfg = MineConfig(input_dir="pairs", out_dir="mined", model="tiny")
    cfg.teacher.model, cfg.teacher.kind = "cross-folder", "cross"
    assert [e for e in cfg.validate() if e.startswith("teacher.kind=cross")]
    cfg.teacher.kind = "bi"
    assert not [e for e in cfg.validate() if "teacher.kind" in e]


def test_gte_run_scores_every_mined_pair_with_the_cross_encoder_before_stage2(tmp_path, cross_encoder):
    from train.app.pipeline import PipelineConfig, teacher_phases

    cfg = PipelineConfig()
    cfg.run.dir = str(tmp_path / "run")
    cfg.mine.teacher.model = "all-mpnet-base-v2"  # mining's teacher stays mining's: stage 2 distils from its own
    cfg.stage2.teacher.kind, cfg.stage2.teacher.model = "cross", str(cross_encoder)
    cfg.stage2.teacher.max_seq_len, cfg.stage2.teacher.bf16 = 32, False
    cfg.stage2.loss.distill_weight, cfg.stage2.loss.distill = 1.0, "margin_mse"
    cfg.resolve()
    assert cfg.stage2.teacher.model == str(cross_encoder) and cfg.stage2.teacher.kind == "cross"
    assert cfg.stage2.teacher.cache_dir == str(tmp_path / "run" / "teacher_cache")
    [phase] = teacher_phases(cfg)
    cfg.mine.out_dir = str(write_tiny_pairs(tmp_path / "mined"))  # stands in for mining's output
    assert phase.name == "teacher_scores" and phase.job(False)["computed"] > 0
    assert phase.job(False)["computed"] == 0  # a re-run scores nothing
    cfg.run.tune_teacher = True
    assert any(e.startswith("run.tune_teacher=true with stage2.teacher.kind=cross") for e in cfg.validate())
