"""The teacher terms of the loss (distillation, guided masking), multi-positive masking and Matryoshka, each against
a reference written out by hand; their exactness under the gradient cache (here) and the 2-process gather
(tests/train/test_distributed.py, mode "teacher")."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.train.test_grad_cache import DOCS, NEGS, QUERIES, assert_same, model, run  # noqa: F401 (fixture)
from tests.train.test_loss import batch, hashes, naive_loss
from train.batch import Batch
from train.config import LossConfig
from train.grad_cache import cached_step
from train.loss import Teacher, contrastive_loss
from train.objective import make_loss_fn
from train.step import make_chunks, plain_step

T = 0.05


def cos(a, b):
    return float(F.cosine_similarity(a, b, dim=0))


def hand_kl(student: list[float], target: list[float], tau: float) -> float:
    """KL(softmax(target / tau) || softmax(student / tau)), written out."""
    zs = math.log(sum(math.exp(s / tau) for s in student))
    zt = math.log(sum(math.exp(t / tau) for t in target))
    return sum(math.exp(t / tau - zt) * ((t / tau - zt) - (s / tau - zs)) for s, t in zip(student, target))


def test_distillation_adds_the_hand_computed_kl_over_each_querys_own_candidates():
    q, d, neg, _ = batch(n=4, k=2)
    tq, td, tneg, _ = batch(n=4, k=2, h=5, seed=1)
    w, tau = 0.7, 0.1
    teacher = Teacher(tq, td, tneg, distill_weight=w, distill_temperature=tau)
    got = contrastive_loss(q, d, neg, kind="infonce", temperature=T, teacher=teacher)
    plain = contrastive_loss(q, d, neg, kind="infonce", temperature=T)
    kls = []
    for i in range(4):
        student = [cos(q[i], d[i])] + [cos(q[i], neg[i, m]) for m in range(2)]
        target = [cos(tq[i], td[i])] + [cos(tq[i], tneg[i, m]) for m in range(2)]
        kls.append(hand_kl(student, target, tau))
    assert abs((got - plain).item() - w * sum(kls) / 4) < 1e-10


def test_in_batch_distillation_covers_every_document_but_masked_duplicates():
    q, d, neg, texts = batch(n=3, k=1)
    tq, td, tneg, _ = batch(n=3, k=1, h=4, seed=2)
    texts = (texts[0], ["same", "other", "same"], texts[2])  # row 2's positive repeats row 0's: left out of row 0's
    d[2] = d[0]
    td[2] = td[0]
    teacher = Teacher(tq, td, tneg, distill_weight=1.0, distill_temperature=0.2, distill_in_batch=True)
    got = contrastive_loss(q, d, neg, kind="infonce", temperature=T, teacher=teacher, **hashes(texts))
    plain = contrastive_loss(q, d, neg, kind="infonce", temperature=T, **hashes(texts))
    docs, tdocs = [d[0], d[1], d[2], *neg[:, 0]], [td[0], td[1], td[2], *tneg[:, 0]]
    kls = []
    for i in range(3):
        keep = [c for c in range(6) if not (c in (0, 2) and c != i and texts[1][c] == texts[1][i])]
        s = torch.tensor([cos(q[i], docs[c]) for c in keep], dtype=torch.float64) / 0.2
        t = torch.tensor([cos(tq[i], tdocs[c]) for c in keep], dtype=torch.float64) / 0.2
        kls.append(float((t.softmax(0) * (t.log_softmax(0) - s.log_softmax(0))).sum()))
    assert abs((got - plain).item() - sum(kls) / 3) < 1e-9


def naive_masked(q, d, neg, drop, temperature=T):
    """The GTE loss with candidate (block, j) of anchor row i left out where drop(i, block, j) is true (the
    positive always kept). Blocks: "q2d" (j over positives then negatives), "q2q", "d2q", "d2d"."""
    n, k = q.shape[0], neg.shape[1]
    docs = [d[j] for j in range(n)] + [neg[j, m] for j in range(n) for m in range(k)]
    owner = list(range(n)) + [j for j in range(n) for _ in range(k)]
    losses = []
    for i in range(n):
        row = [cos(q[i], docs[c]) for c in range(len(docs)) if c == i or not drop(i, "q2d", c)]
        positive = row[[c for c in range(len(docs)) if c == i or not drop(i, "q2d", c)].index(i)]
        row += [cos(q[i], q[j]) for j in range(n) if j != i and not drop(i, "q2q", j)]
        row += [cos(q[j], d[i]) for j in range(n) if j == i or not drop(i, "d2q", j)]
        row += [cos(d[i], docs[c]) for c in range(len(docs)) if owner[c] != i and not drop(i, "d2d", c)]
        scores = torch.tensor(row, dtype=torch.float64) / temperature
        losses.append(torch.logsumexp(scores, 0) - positive / temperature)
    return torch.stack(losses).mean()


def test_guided_masking_drops_exactly_the_candidates_the_teacher_ranks_above_its_positive():
    q, d, neg, _ = batch(n=4, k=1)
    eye = torch.eye(8, dtype=torch.float64)
    tq, td = eye[:4].clone(), eye[:4].clone()  # the teacher: each query matches its own positive only (score 1)
    td[3] = (eye[0] + eye[3]) / math.sqrt(2)  # ... but it also finds d_3 about query 0's topic (0.71 > 1 - 0.5)
    tneg = eye[4:8].view(4, 1, 8)
    margin = 0.5
    teacher = Teacher(tq, td, tneg, guide_margin=margin)
    got = contrastive_loss(q, d, neg, kind="gte", temperature=T, teacher=teacher)
    tdocs = [td[j] for j in range(4)] + [tneg[j, 0] for j in range(4)]

    def drop(i, block, j):
        bar = cos(tq[i], td[i]) - margin
        anchor = tq[i] if block in ("q2d", "q2q") else td[i]
        cand = tdocs[j] if block in ("q2d", "d2d") else tq[j]
        return cos(anchor, cand) > bar

    assert drop(0, "q2d", 3) and drop(3, "d2q", 0) and not drop(1, "q2d", 3)  # the plant took effect
    assert torch.allclose(got, naive_masked(q, d, neg, drop), rtol=1e-10)
    assert got < contrastive_loss(q, d, neg, kind="gte", temperature=T)  # the masked candidate was a hard one


def test_another_rows_positive_for_the_same_query_is_not_a_negative():
    q, d, neg, texts = batch(n=4, k=1)
    q[2] = q[0]
    texts = (["same", "b", "same", "c"], texts[1], texts[2])  # rows 0 and 2: one query, two different positives
    got = contrastive_loss(q, d, neg, kind="gte", temperature=T, **hashes(texts))

    def drop(i, block, j):  # duplicates of the anchor's texts, and the other positive of its query
        same_query = {0: 2, 2: 0}.get(i)
        if block in ("q2q", "d2q"):
            return j == same_query
        return j == same_query  # j < n: a positive

    assert torch.allclose(got, naive_masked(q, d, neg, drop), rtol=1e-10)
    assert torch.allclose(got, naive_loss(q, d, neg, "gte", T, texts), rtol=1e-10)


def test_matryoshka_at_the_full_dim_alone_is_the_plain_loss_and_dims_add_up():
    b = Batch("s", [0, 1, 2], ["q0", "q1", "q2"], ["d0", "d1", "d2"], [["n0"], ["n1"], ["n2"]])
    emb = torch.randn(9, 8, dtype=torch.float64)
    order = torch.arange(9)
    plain = make_loss_fn(b, order, LossConfig(temperature=T), "cpu")(emb)
    full = make_loss_fn(b, order, LossConfig(temperature=T, matryoshka_dims=[8]), "cpu")(emb)
    assert torch.equal(plain, full)
    mixed = make_loss_fn(b, order, LossConfig(temperature=T, matryoshka_dims=[8, 4], matryoshka_weights=[1, 0.5]),
                         "cpu")(emb)
    q, d, neg = emb[:3, :4], emb[3:6, :4], emb[6:, :4].reshape(3, 1, 4)
    short = contrastive_loss(q, d, neg, kind="gte", temperature=T, **b.hashes())
    assert torch.allclose(mixed, plain + 0.5 * short, rtol=1e-12)


def teacher_of(texts):
    return torch.stack([torch.randn(6, generator=torch.Generator().manual_seed(len(t) * 31 + ord(t[0])))
                        for t in texts])


@pytest.mark.parametrize("chunk_size", [3, 5])
def test_distillation_guide_and_matryoshka_are_exact_under_the_gradient_cache(model, chunk_size):  # noqa: F811
    b = Batch("s", [0, 1, 2, 3], QUERIES, DOCS, [[n] for n in NEGS])
    vectors = (teacher_of(QUERIES), teacher_of(DOCS), teacher_of(NEGS).view(4, 1, 6))
    cfg = LossConfig(temperature=T, distill_weight=0.5, distill_temperature=0.1, distill_in_batch=True,
                     guide_margin=0.2, matryoshka_dims=[32, 8])
    ids = model.tokenize_ids(b.queries + b.documents())
    chunks, order = make_chunks(ids, chunk_size, model.tokenizer.pad_token_id, pad_multiple=1)
    # dropout on: the cache replays each chunk's masks; the plain step over the same chunks draws the same ones
    cached = run(model, cached_step, chunks, make_loss_fn(b, order, cfg, "cpu", vectors))
    plain = run(model, plain_step, chunks, make_loss_fn(b, order, cfg, "cpu", vectors))
    assert_same(cached, plain)
    without = run(model, plain_step, chunks, make_loss_fn(b, order, LossConfig(temperature=T), "cpu"))
    assert not torch.allclose(without[0], plain[0])  # the teacher terms are really in the loss


def test_matryoshka_dims_above_the_models_are_refused_naming_the_key():
    from gte_model.core.errors import UserError
    from train.build import build_model
    from train.config import TrainConfig

    cfg = TrainConfig()
    cfg.loss.matryoshka_dims = [32, 64]  # the tiny preset has 32
    with pytest.raises(UserError, match=r"loss.matryoshka_dims=\[32, 64\]: \[64\] exceed the model's 32 dims"):
        build_model(cfg)


def test_margin_mse_adds_the_hand_computed_squared_margin_gaps_over_each_querys_negatives():
    q, d, neg, _ = batch(n=4, k=3)
    tq, td, tneg, _ = batch(n=4, k=3, h=5, seed=3)
    w, tau = 0.4, 0.1
    teacher = Teacher(tq, td, tneg, distill_weight=w, distill_temperature=tau, distill_kind="margin_mse")
    got = contrastive_loss(q, d, neg, kind="gte", temperature=T, teacher=teacher)
    plain = contrastive_loss(q, d, neg, kind="gte", temperature=T)
    rows = []
    for i in range(4):
        gaps = [((cos(q[i], d[i]) - cos(q[i], neg[i, m])) - (cos(tq[i], td[i]) - cos(tq[i], tneg[i, m]))) / tau
                for m in range(3)]
        rows.append(sum(g * g for g in gaps) / 3)
    assert abs((got - plain).item() - w * sum(rows) / 4) < 1e-10


def test_in_batch_margin_mse_averages_over_every_other_document_and_skips_a_duplicate_negative():
    q, d, neg, texts = batch(n=3, k=1)
    tq, td, tneg, _ = batch(n=3, k=1, h=4, seed=4)
    texts = (texts[0], texts[1], [["d0"], ["n1.0"], ["n2.0"]])  # row 0's negative repeats its own positive's text
    tau = 0.2
    docs, tdocs = [d[0], d[1], d[2], *neg[:, 0]], [td[0], td[1], td[2], *tneg[:, 0]]
    for in_batch in (False, True):
        teacher = Teacher(tq, td, tneg, distill_weight=1.0, distill_temperature=tau, distill_in_batch=in_batch,
                          distill_kind="margin_mse")
        q_ = q.clone().requires_grad_(True)
        got = contrastive_loss(q_, d, neg, kind="infonce", temperature=T, teacher=teacher, **hashes(texts))
        plain = contrastive_loss(q, d, neg, kind="infonce", temperature=T, **hashes(texts))
        rows = []
        for i in range(3):
            cands = [c for c in range(6) if c != i and (in_batch or c == 3 + i) and not (i == 0 and c == 3)]
            gaps = [((cos(q[i], docs[i]) - cos(q[i], docs[c])) - (cos(tq[i], tdocs[i]) - cos(tq[i], tdocs[c]))) / tau
                    for c in cands]
            rows.append(sum(g * g for g in gaps) / len(gaps) if gaps else 0.0)
        assert abs((got - plain).item() - sum(rows) / 3) < 1e-10, in_batch
        got.backward()
        assert torch.isfinite(q_.grad).all()


def test_kl_distillation_leaves_out_an_own_negative_that_duplicates_the_positive():
    q, d, neg, texts = batch(n=2, k=2)
    tq, td, tneg, _ = batch(n=2, k=2, h=4, seed=5)
    texts = (texts[0], texts[1], [["d0", "n0.1"], ["n1.0", "n1.1"]])
    teacher = Teacher(tq, td, tneg, distill_weight=1.0, distill_temperature=0.1)
    got = contrastive_loss(q, d, neg, kind="infonce", temperature=T, teacher=teacher, **hashes(texts))
    assert torch.isfinite(got)
