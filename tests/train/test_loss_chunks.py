"""Row-chunked loss (loss.row_chunk): the same loss and gradients as one block, the old code path by default below
the budget, and memory bounded by one chunk. Memory is shown structurally, not by timing or RSS: the largest tensor
autograd saves for backward, and the largest storage any op creates in forward and backward (recompute included)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.graph import saved_tensors_hooks
from torch.utils._python_dispatch import TorchDispatchMode

import train.loss
import train.objective
from tests.train.test_loss import T, batch, hashes, plant_duplicates
from train.batch import Batch
from train.config import LossConfig, TrainConfig
from train.loss import LOSSES, contrastive_loss, rows_per_chunk


def planted(n=10, k=2, h=8, seed=0, dtype=torch.float64):
    """q, d, neg with duplicate texts planted (identical vectors) and their hash kwargs."""
    q, d, neg, texts = plant_duplicates(*batch(n=n, k=k, h=h, seed=seed))
    return q.to(dtype), d.to(dtype), neg.to(dtype), hashes(texts)


def loss_and_grads(q, d, neg, **kwargs):
    leaves = [x.clone().requires_grad_() for x in (q, d, neg)]
    loss = contrastive_loss(*leaves, temperature=T, **kwargs)
    loss.backward()
    return loss.detach(), [x.grad for x in leaves]


def columns(kind, n, k):
    return n + n * k if kind == "infonce" else 2 * (n + n * k) + 2 * n


@pytest.mark.parametrize("kind", LOSSES)
@pytest.mark.parametrize("k", [0, 2])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("rows", [None, slice(3, 9)])
def test_chunked_loss_and_gradients_equal_one_block(kind, k, masked, rows):
    q, d, neg, hash_kwargs = planted(k=2)
    neg = neg[:, :k]
    hash_kwargs = {**hash_kwargs, "neg_hash": hash_kwargs["neg_hash"][:, :k]} if masked else {}
    whole, whole_grads = loss_and_grads(q, d, neg, kind=kind, rows=rows, **hash_kwargs)
    # chunks of 4+4+2 rows (all 10) or 4+2 (rows 3..8): an uneven last chunk, a sub-slice as on one of many processes
    chunked, chunked_grads = loss_and_grads(q, d, neg, kind=kind, rows=rows, row_chunk=4, **hash_kwargs)
    assert torch.allclose(chunked, whole, rtol=1e-10, atol=1e-12)
    for a, b in zip(chunked_grads, whole_grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", LOSSES)
def test_chunked_float32_loss_and_gradients_agree_to_1e6(kind):
    q, d, neg, hash_kwargs = planted(n=40, k=2, h=16, dtype=torch.float32)
    whole, whole_grads = loss_and_grads(q, d, neg, kind=kind, rows=slice(8, 36), **hash_kwargs)
    chunked, chunked_grads = loss_and_grads(q, d, neg, kind=kind, rows=slice(8, 36), row_chunk=5, **hash_kwargs)
    assert torch.allclose(chunked, whole, rtol=1e-6, atol=0)
    for a, b in zip(chunked_grads, whole_grads):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6 * b.abs().max().item())


def test_default_below_the_budget_is_one_block_without_checkpoint(monkeypatch):
    q, d, neg, hash_kwargs = planted()
    one_block = contrastive_loss(q, d, neg, row_chunk=q.shape[0], **hash_kwargs)

    def fail(*args, **kwargs):
        raise AssertionError("the default path must not chunk a batch below the budget")

    monkeypatch.setattr(train.loss, "checkpoint", fail)
    assert torch.equal(contrastive_loss(q, d, neg, **hash_kwargs), one_block)  # bit-identical


@pytest.mark.parametrize("kind", LOSSES)
def test_auto_chunks_only_above_the_budget(kind, monkeypatch):
    q, d, neg, hash_kwargs = planted(n=10, k=2)
    whole = contrastive_loss(q, d, neg, kind=kind, **hash_kwargs)
    calls = []
    real = train.loss.checkpoint
    monkeypatch.setattr(train.loss, "checkpoint", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    monkeypatch.setattr(train.loss, "AUTO_CHUNK_ELEMENTS", 3 * columns(kind, 10, 2))  # 3 rows per chunk
    chunked = contrastive_loss(q, d, neg, kind=kind, **hash_kwargs)
    assert len(calls) == math.ceil(10 / 3) and torch.allclose(chunked, whole, rtol=1e-12)


def test_rows_per_chunk_keeps_one_block_within_the_budget():
    assert rows_per_chunk("gte", 8192, 0) == 8192  # 8,192 x 32,768 = 2^28: still one block on one process
    assert rows_per_chunk("gte", 16384, 0) == 4096
    assert rows_per_chunk("gte", 65536, 0) == 1024
    assert rows_per_chunk("gte", 65536, 7) == 2**28 // (65536 * 18)
    assert rows_per_chunk("infonce", 65536, 0) == 4096
    assert rows_per_chunk("gte", 65536, 0, row_chunk=100) == 100
    assert rows_per_chunk("gte", 2**30, 0) == 1  # never 0 rows


def memory_batch(kind):
    q, d, neg, hash_kwargs = planted(n=48, k=2, h=4)
    return (q, d, neg), {"kind": kind, **hash_kwargs}, 48 * columns(kind, 48, 2), 8 * columns(kind, 48, 2)


@pytest.mark.parametrize("kind", LOSSES)
def test_chunked_loss_saves_no_block_for_backward(kind):
    tensors, kwargs, block, chunk = memory_batch(kind)  # block: elements of [r, C]; chunk: of [8, C]

    def saved_sizes(**extra):  # (largest, total) elements of what autograd keeps from forward to backward
        sizes = []
        leaves = [x.clone().requires_grad_() for x in tensors]
        with saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            loss = contrastive_loss(*leaves, **kwargs, **extra)
        loss.backward()
        return max(sizes), sum(sizes)

    assert saved_sizes()[0] >= block  # one block: autograd keeps an [r, C] tensor until backward
    largest, total = saved_sizes(row_chunk=8)
    # chunked: only the [N(1+K), H]-sized normalised inputs are kept, all chunks together less than one block
    assert largest <= chunk and total < block


class LargestStorage(TorchDispatchMode):
    """Records the largest storage (in elements) that any op creates, forward and backward."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.untyped_storage().nbytes() // t.element_size())
        return out


@pytest.mark.parametrize("kind", LOSSES)
def test_chunked_forward_and_backward_never_create_more_than_a_chunk(kind):
    tensors, kwargs, block, chunk = memory_batch(kind)

    def largest_created(**extra):
        leaves = [x.clone().requires_grad_() for x in tensors]
        with LargestStorage() as mode:
            contrastive_loss(*leaves, **kwargs, **extra).backward()
        assert all(x.grad is not None for x in leaves)
        return mode.largest

    assert largest_created() >= block
    # 2x: the duplicate-mask comparison is [rows, N(1+K), 2] booleans, which exceeds [rows, C] for infonce
    assert largest_created(row_chunk=8) <= 2 * chunk


def test_chunked_loss_keeps_float32_under_bf16_autocast():
    q, d, neg, hash_kwargs = planted(n=12, k=2, dtype=torch.float32)
    ref, ref_grads = loss_and_grads(q, d, neg, **hash_kwargs)
    leaves = [x.clone().requires_grad_() for x in (q, d, neg)]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the loop's way: forward under autocast, backward outside
        got = contrastive_loss(*leaves, temperature=T, row_chunk=5, **hash_kwargs)
    got.backward()  # recomputes each chunk's logits with autocast off, as in its forward (bf16 would be off ~1e-3)
    assert got.dtype == torch.float32 and torch.allclose(got, ref, rtol=1e-6)
    for a, b in zip(leaves, ref_grads):
        assert torch.allclose(a.grad, b, rtol=1e-5, atol=1e-6)


def test_chunked_loss_without_grad_equals_one_block():
    q, d, neg, hash_kwargs = planted()
    with torch.no_grad():
        chunked = contrastive_loss(q, d, neg, row_chunk=3, **hash_kwargs)
    assert torch.allclose(chunked, contrastive_loss(q, d, neg, **hash_kwargs), rtol=1e-12)


def test_loss_factory_and_validation_pass_loss_row_chunk(monkeypatch):
    seen, real = [], train.objective.contrastive_loss
    spy = lambda *a, **kw: seen.append(kw["row_chunk"]) or real(*a, **kw)  # noqa: E731
    monkeypatch.setattr(train.objective, "contrastive_loss", spy)
    b = Batch("s", [0, 1, 2], ["q0", "q1", "q2"], ["d0", "d1", "d2"], [[], [], []])
    emb = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)  # [2b, H]: queries then positives
    cfg = LossConfig(row_chunk=2)
    loss = train.objective.make_loss_fn(b, torch.arange(6), cfg, "cpu")(emb)
    whole = train.objective.make_loss_fn(b, torch.arange(6), LossConfig(), "cpu")(emb)
    value, *_ = train.objective.validation_scores(b, emb.detach(), cfg)
    assert seen == [2, 0, 2] and torch.allclose(loss, whole, rtol=1e-12) and math.isclose(value, whole.item())


def test_config_rejects_a_negative_row_chunk():
    errors = TrainConfig(loss=LossConfig(row_chunk=-1)).validate(world_size=1, zero_stage=0)
    assert "loss.row_chunk=-1: must be >= 0" in errors
