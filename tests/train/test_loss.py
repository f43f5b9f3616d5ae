"""train.loss against a naive reference: each row's scores assembled one by one in Python loops, then an explicit
log-softmax over that row."""

from __future__ import annotations

import math

import pytest
import torch

from train.batch import Batch
from train.loss import LOSSES, contrastive_loss

T = 0.05  # a temperature that keeps the loss away from 0 for random vectors, so differences show


def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b) / (a.norm() * b.norm())


def naive_loss(q, d, neg, kind, temperature, texts=None, rows=None):
    """texts: (query texts [N], positive texts [N], negative texts [N][K]) or None for no duplicate masking. With
    texts, another row's positive is also dropped when that row's query text equals q_i's (multi-positive)."""
    n = q.shape[0]
    k = 0 if neg is None else neg.shape[1]
    docs = [(d[j], j, None if texts is None else texts[1][j]) for j in range(n)]  # (vector, owner, text)
    docs += [(neg[j, m], j, None if texts is None else texts[2][j][m]) for j in range(n) for m in range(k)]
    losses = []
    for i in range(n)[rows or slice(None)]:
        pair = set() if texts is None else {texts[0][i], texts[1][i]}

        def other_positive(c):  # document c is the positive of another row asking q_i's query
            return texts is not None and c < n and c != i and texts[0][c] == texts[0][i]

        row = []  # (score, is the numerator)
        for c, (vec, _, text) in enumerate(docs):  # q_i -> every document
            if c == i or (text not in pair and not other_positive(c)):
                row.append((cos(q[i], vec) / temperature, c == i))
        if kind == "gte":
            for j in range(n):  # q_i -> other queries
                if j != i and (texts is None or texts[0][j] not in pair):
                    row.append((cos(q[i], q[j]) / temperature, False))
            for j in range(n):  # every query -> d_i (j == i is the positive's score again, not the numerator)
                if j == i or texts is None or texts[0][j] not in pair:
                    row.append((cos(q[j], d[i]) / temperature, False))
            for c, (vec, owner, text) in enumerate(docs):  # d_i -> documents of other queries
                if owner != i and text not in pair and not other_positive(c):
                    row.append((cos(d[i], vec) / temperature, False))
        scores = torch.stack([s for s, _ in row])
        numerator = [p for _, p in row].index(True)
        losses.append(-torch.log_softmax(scores, dim=0)[numerator])
    return torch.stack(losses).mean()


def batch(n=6, k=2, h=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, d = torch.randn(n, h, generator=g, dtype=torch.float64), torch.randn(n, h, generator=g, dtype=torch.float64)
    neg = torch.randn(n, k, h, generator=g, dtype=torch.float64)
    negs = [[f"n{i}.{m}" for m in range(k)] for i in range(n)]
    return q, d, neg, ([f"q{i}" for i in range(n)], [f"d{i}" for i in range(n)], negs)


def hashes(texts):
    q_texts, d_texts, n_texts = texts
    return Batch("s", list(range(len(q_texts))), list(q_texts), list(d_texts), [list(r) for r in n_texts]).hashes()


def text_hash(texts):
    return Batch("s", list(range(len(texts))), list(texts), list(texts), [[] for _ in texts]).hashes()["q_hash"]


def plant_duplicates(q, d, neg, texts):
    """Row 3's positive repeats row 1's, query 4 repeats query 0, a negative of row 2 repeats row 5's positive and
    row 0's positive repeats query 5's text: duplicate texts come with identical vectors."""
    q, d, neg = q.clone(), d.clone(), neg.clone()
    qt, dt, nt = list(texts[0]), list(texts[1]), [list(r) for r in texts[2]]
    d[3], dt[3] = d[1], dt[1]
    q[4], qt[4] = q[0], qt[0]
    neg[2, 1], nt[2][1] = d[5], dt[5]
    d[0], dt[0] = q[5], qt[5]
    return q, d, neg, (qt, dt, nt)


@pytest.mark.parametrize("kind", LOSSES)
@pytest.mark.parametrize("k", [0, 2])
def test_loss_matches_naive_log_softmax(kind, k):
    q, d, neg, _ = batch(k=k)
    got = contrastive_loss(q, d, neg, kind=kind, temperature=T)
    assert torch.allclose(got, naive_loss(q, d, neg, kind, T), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", LOSSES)
def test_loss_without_negatives_equals_none_and_zero_negatives(kind):
    q, d, _, _ = batch()
    empty = q.new_zeros((q.shape[0], 0, q.shape[1]))
    assert torch.allclose(contrastive_loss(q, d, None, kind=kind), contrastive_loss(q, d, empty, kind=kind))


@pytest.mark.parametrize("kind", LOSSES)
@pytest.mark.parametrize("k", [0, 2])
def test_masked_loss_matches_naive_with_planted_duplicates(kind, k):
    q, d, neg, texts = plant_duplicates(*batch(k=2))
    neg, texts = neg[:, :k], (texts[0], texts[1], [r[:k] for r in texts[2]])
    got = contrastive_loss(q, d, neg, kind=kind, temperature=T, **hashes(texts))
    assert torch.allclose(got, naive_loss(q, d, neg, kind, T, texts), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", LOSSES)
def test_planted_duplicate_changes_the_unmasked_loss_only(kind):
    q, d, neg, texts = batch()
    clean = contrastive_loss(q, d, neg, kind=kind, temperature=T, **hashes(texts))
    assert torch.allclose(clean, contrastive_loss(q, d, neg, kind=kind, temperature=T))  # unique texts: no effect
    q2, d2, neg2, texts2 = plant_duplicates(q, d, neg, texts)
    unmasked = contrastive_loss(q2, d2, neg2, kind=kind, temperature=T)
    masked = contrastive_loss(q2, d2, neg2, kind=kind, temperature=T, **hashes(texts2))
    assert masked < unmasked - 1e-3  # a duplicate counted as a negative inflates the denominator
    assert torch.allclose(unmasked, naive_loss(q2, d2, neg2, kind, T))


def test_infonce_with_every_candidate_a_duplicate_of_the_positive_is_zero():
    q, d, neg, _ = batch(n=4, k=1)
    same = ([f"q{i}" for i in range(4)], ["doc"] * 4, [["doc"]] * 4)
    loss = contrastive_loss(q, d, neg, kind="infonce", temperature=T, **hashes(same))
    assert abs(loss.item()) < 1e-12  # only the positive remains: log-softmax over one entry


@pytest.mark.parametrize("kind", LOSSES)
def test_row_slices_average_to_the_full_loss(kind):
    q, d, neg, texts = plant_duplicates(*batch(n=6))
    full = contrastive_loss(q, d, neg, kind=kind, temperature=T, **hashes(texts))
    parts = [
        contrastive_loss(q, d, neg, kind=kind, temperature=T, rows=slice(s, s + 2), **hashes(texts)) for s in (0, 2, 4)
    ]
    assert torch.allclose(sum(parts) / 3, full, rtol=1e-12)
    assert torch.allclose(parts[1], naive_loss(q, d, neg, kind, T, texts, rows=slice(2, 4)), rtol=1e-10)


@pytest.mark.parametrize("kind", LOSSES)
def test_loss_gradients_match_naive(kind):
    q, d, neg, texts = plant_duplicates(*batch(n=6))
    ours = [x.clone().requires_grad_() for x in (q, d, neg)]
    ref = [x.clone().requires_grad_() for x in (q, d, neg)]
    contrastive_loss(*ours, kind=kind, temperature=T, **hashes(texts)).backward()
    naive_loss(*ref, kind, T, texts).backward()
    for a, b in zip(ours, ref):
        assert torch.allclose(a.grad, b.grad, rtol=1e-8, atol=1e-10)


def test_gte_counts_all_four_directions_in_one_partition():
    # Two pairs, orthogonal unit vectors chosen so every score is known: the joint partition function by hand.
    q = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]], dtype=torch.float64)
    d = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 0]], dtype=torch.float64)
    # row 0: q->d {1, 0}, q->q {0}, d->q {1, 0}, d->d {0}  (cosines)
    z0 = math.e + 1 + 1 + math.e + 1 + 1
    # row 1: q->d {0, 0}, q->q {0}, d->q {0, 0}, d->d {0}; the positive's score is 0
    z1 = 6.0
    expected = ((math.log(z0) - 1) + (math.log(z1) - 0)) / 2
    assert math.isclose(contrastive_loss(q, d, kind="gte", temperature=1.0).item(), expected, rel_tol=1e-12)


def test_loss_upcasts_bf16_inputs_and_ignores_autocast():
    q, d, neg, _ = batch()
    ref = contrastive_loss(q.float(), d.float(), neg.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = contrastive_loss(q.float(), d.float(), neg.float())
    assert got.dtype == torch.float32 and torch.allclose(got, ref, rtol=1e-6)
    assert contrastive_loss(q.bfloat16(), d.bfloat16(), neg.bfloat16()).dtype == torch.float32


def test_batch_text_hashes_are_stable_and_distinguish_texts():
    h = text_hash(["a", "b", "a", ""])
    assert h.dtype == torch.long and h[0] == h[2] and h[0] != h[1]
    assert h[0].item() == text_hash(["a"])[0].item() == 3405396810240292928  # a fixed value: not salted per process


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "triplet"}, "kind"),
        ({"temperature": 0.0}, "temperature"),
        ({"q_hash": torch.zeros(6, dtype=torch.long)}, "both q_hash and d_hash"),
        ({"q_hash": torch.zeros(6, dtype=torch.long), "d_hash": torch.zeros(6, dtype=torch.long)}, "neg_hash"),
        ({"row_chunk": -1}, "row_chunk"),
    ],
)
def test_loss_rejects_bad_arguments_with_a_message(kwargs, message):
    q, d, neg, _ = batch()
    with pytest.raises(ValueError, match=message):
        contrastive_loss(q, d, neg, **kwargs)
