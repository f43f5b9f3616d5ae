"""Gradient parity on a tiny BERT: cached step == plain step == one unchunked forward (dropout on, same seed), in
fp32 and under bf16 autocast; length-sorted chunks == one padded forward; make_chunks' contract."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from gte_model import Packed, collate
from tests.conftest import make_tiny_model
from train.grad_cache import cached_step
from train.loss import contrastive_loss
from train.step import make_chunks, plain_step

QUERIES = ["the cat plays piano", "stock price fell today", "python package", "a red dog and a blue cat run"]
DOCS = [
    "a cat is playing the piano in the music room",
    "the market fell on the news report today",
    "a python library file with data",
    "the red dog runs with the blue cat",
]
NEGS = ["a dog plays guitar", "the stock rose", "the python model in a test file of data text", "a green man"]
N, K = len(QUERIES), 1


@pytest.fixture
def model(tmp_path):
    m = make_tiny_model(tmp_path, seed=0)
    for module in m.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.2  # hidden and attention dropout: large enough that a wrong replay shows
    return m.train()


def setup(model, chunk_size, kind="gte", packed=False):
    """Chunks of the 12 texts and a loss_fn that un-permutes the chunk-ordered embeddings into q, d, neg."""
    ids = model.tokenize_ids(QUERIES + DOCS + NEGS)
    # pad_multiple=1: the unchunked references pad to the longest row, and dropout masks follow the width
    chunks, order = make_chunks(ids, chunk_size, model.tokenizer.pad_token_id, pad_multiple=1, packed=packed)
    inverse = torch.argsort(order)

    def loss_fn(emb):  # [M, H] in chunk order
        emb = emb[inverse]  # original order: queries, positives, negatives
        return contrastive_loss(emb[:N], emb[N : 2 * N], emb[2 * N :].reshape(N, K, -1), kind=kind, temperature=0.05)

    return ids, chunks, loss_fn


def forward(model, chunk):
    return model(packed=chunk) if isinstance(chunk, Packed) else model(**chunk)


def run(model, step, chunks, loss_fn, seed=0, **kwargs):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = step(lambda c: forward(model, c), chunks, loss_fn, **kwargs)
    return loss, grads_of(model)


def grads_of(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b, rtol=1e-5, atol=1e-7, loss_tol=1e-6):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert torch.allclose(loss_a, loss_b, rtol=loss_tol, atol=0), (loss_a.item(), loss_b.item())
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], rtol=rtol, atol=atol), name


def test_dropout_is_active_so_parity_tests_can_fail(model):
    _, chunks, loss_fn = setup(model, chunk_size=4)
    seed0, seed1 = run(model, plain_step, chunks, loss_fn, seed=0), run(model, plain_step, chunks, loss_fn, seed=1)
    assert not torch.allclose(seed0[0], seed1[0])


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("kind", ["gte", "infonce"])
def test_cached_step_matches_plain_step_with_dropout_on(model, kind, packed):
    _, chunks, loss_fn = setup(model, chunk_size=3, kind=kind, packed=packed)
    assert len(chunks) == 4
    # atol 1e-6 packed: the token-type row's gradient is a sum over every token (O(1) terms, result ~1e-5), and
    # the cached step sums it per chunk: float32 rounding of the order, not a different gradient
    atol = 1e-6 if packed else 1e-7
    assert_same(run(model, cached_step, chunks, loss_fn), run(model, plain_step, chunks, loss_fn), atol=atol)


def test_cached_step_matches_one_unchunked_forward_with_dropout_on(model):
    ids, chunks, loss_fn = setup(model, chunk_size=len(QUERIES) * 3)  # one chunk: the whole batch, sorted
    cached = run(model, cached_step, chunks, loss_fn)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    emb = model(**collate([ids[i] for i in order], model.tokenizer.pad_token_id))  # the textbook step
    loss = loss_fn(emb)
    loss.backward()
    assert_same(cached, (loss.detach(), grads_of(model)))


def test_cached_step_matches_plain_step_under_bf16_autocast(model):
    _, chunks, loss_fn = setup(model, chunk_size=3)
    bf16 = {"autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}
    cached, plain = run(model, cached_step, chunks, loss_fn, **bf16), run(model, plain_step, chunks, loss_fn, **bf16)
    assert torch.allclose(cached[0], plain[0], rtol=1e-6)  # the same bf16 forward: the same loss
    # Gradients within bf16 rounding: the plain step sums the chunks' weight gradients in bf16 (autocast shares
    # one bf16 copy of each weight), the cached step sums them in fp32 (measured: <= 0.9% relative norm).
    assert cached[1].keys() == plain[1].keys()
    for name, grad in plain[1].items():
        assert (cached[1][name] - grad).norm() <= 3e-2 * grad.norm() + 1e-6, name
    fp32 = run(model, plain_step, chunks, loss_fn)
    assert not torch.allclose(plain[0], fp32[0], rtol=1e-6, atol=0)  # autocast really ran in bf16


@pytest.mark.parametrize("packed", [False, True])
def test_sorted_chunks_give_the_loss_and_gradients_of_one_padded_forward(model, packed):
    model.eval()  # dropout off: only padding and order differ
    ids, chunks, loss_fn = setup(model, chunk_size=3, packed=packed)
    chunked = run(model, cached_step, chunks, loss_fn)
    model.zero_grad(set_to_none=True)
    emb = model(**collate(ids, model.tokenizer.pad_token_id))  # original order, padded to the longest text
    loss = contrastive_loss(emb[:N], emb[N : 2 * N], emb[2 * N :].reshape(N, K, -1), temperature=0.05)
    loss.backward()
    assert_same(chunked, (loss.detach(), grads_of(model)), rtol=1e-4, atol=1e-5, loss_tol=1e-5)


def test_cached_step_calls_injected_backward_per_chunk_and_no_sync_for_all_but_last(model):
    _, chunks, loss_fn = setup(model, chunk_size=5)  # 3 chunks
    calls = []

    @contextlib.contextmanager
    def no_sync():
        calls.append("enter no_sync")
        yield
        calls.append("exit no_sync")

    def backward(t):
        calls.append("backward")
        t.backward()

    cached_step(lambda c: model(**c), chunks, loss_fn, backward=backward, no_sync=no_sync)
    assert calls == ["enter no_sync", "backward", "exit no_sync"] * 2 + ["backward"]
    calls.clear()
    plain_step(lambda c: model(**c), chunks, loss_fn, backward=backward)
    assert calls == ["backward"]


def test_cached_step_leaves_the_rng_where_the_plain_step_does(model):
    _, chunks, loss_fn = setup(model, chunk_size=3)
    run(model, cached_step, chunks, loss_fn)
    after_cached = torch.get_rng_state()
    run(model, plain_step, chunks, loss_fn)
    assert torch.equal(after_cached, torch.get_rng_state())  # the next step's dropout does not depend on the step kind


def test_make_chunks_sorts_by_length_pads_per_chunk_and_returns_the_order():
    ids = [[1] * n for n in (3, 7, 1, 5, 7, 2)]
    chunks, order = make_chunks(ids, chunk_size=4, pad_id=0, pad_multiple=1)
    assert order.tolist() == [1, 4, 3, 0, 5, 2]  # longest first, ties in input order
    assert [c["input_ids"].shape for c in chunks] == [(4, 7), (2, 2)]  # each chunk padded to its own longest row
    lengths = torch.cat([c["attention_mask"].sum(1) for c in chunks])  # [M] in chunk order
    assert lengths[torch.argsort(order)].tolist() == [3, 7, 1, 5, 7, 2]  # the documented un-permutation
    assert all(set(c) == {"input_ids", "attention_mask", "token_type_ids"} for c in chunks)


def test_make_chunks_rounds_widths_up_and_fills_chunks_to_a_token_budget():
    ids = [[1] * n for n in (40, 3, 20, 17, 5, 2, 9, 33)]
    chunks, order = make_chunks(ids, chunk_size=8, pad_id=0, max_tokens=64, pad_multiple=16)
    shapes = [tuple(c["input_ids"].shape) for c in chunks]
    assert shapes == [(1, 48), (1, 48), (2, 32), (4, 16)]  # rows x width <= 64, widths multiples of 16
    assert sum(r for r, _ in shapes) == len(ids)
    lengths = torch.cat([c["attention_mask"].sum(1) for c in chunks])
    assert lengths[torch.argsort(order)].tolist() == [40, 3, 20, 17, 5, 2, 9, 33]


def test_packed_chunks_hold_real_tokens_only_within_the_budget():
    ids = [[7] * n for n in (40, 3, 20, 17, 5, 2, 9, 33)]
    chunks, order = make_chunks(ids, chunk_size=4, pad_id=0, max_tokens=60, packed=True)
    assert all(isinstance(c, Packed) for c in chunks)
    assert [c.lengths.tolist() for c in chunks] == [[40], [33, 20], [17, 9, 5, 3], [2]]  # <= 60 tokens, <= 4 texts
    lengths = torch.cat([c.lengths for c in chunks])
    assert lengths[torch.argsort(order)].tolist() == [40, 3, 20, 17, 5, 2, 9, 33]
    assert sum(c.input_ids.numel() for c in chunks) == 129  # no padding token anywhere


def test_make_chunks_rejects_a_zero_chunk_size():
    with pytest.raises(ValueError, match="chunk_size=0"):
        make_chunks([[1]], chunk_size=0, pad_id=0)
