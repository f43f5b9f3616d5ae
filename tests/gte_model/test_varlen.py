"""Varlen attention of the packed forward (gte_model.packed): the offsets `pack` computes, each kernel against a
per-sequence SDPA loop, the packed forward through a varlen kernel against the padded BertModel, the choice of kernel,
and (CUDA only) bf16/fp32 parity and cached-vs-plain gradients with attention dropout on."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gte_model import collate, pack
from gte_model import packed as packed_mod
from gte_model.packed import attention_backend, force_attention, varlen_attention
from tests.conftest import MIXED_TEXTS, make_tiny_model

TEXTS = MIXED_TEXTS[:6]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def reference_attention(qkv, lengths, dropout=0.0, scale=None, causal=False):
    """The definition: each sequence attends to itself alone (causal: to its tokens up to each query), one SDPA call
    per sequence. qkv [T, 3, h, d]."""
    outs, start = [], 0
    for n in lengths:
        q, k, v = qkv[start : start + n].permute(1, 2, 0, 3).unbind(0)  # each [h, n, d]
        outs.append(F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scale,
                                                   is_causal=causal).transpose(0, 1))
        start += n
    return torch.cat(outs)  # [T, h, d]


def random_lengths(rng, rows):
    return [rng.randrange(1, 40) for _ in range(rows)]


@pytest.mark.parametrize("seed", range(5))
def test_pack_offsets_are_the_running_sum_of_the_lengths(seed):
    rng = random.Random(seed)
    lengths = random_lengths(rng, rng.randrange(1, 30))
    p = pack([[7] * n for n in lengths])
    assert p.cu_seqlens.dtype == torch.int32 and p.cu_seqlens.shape == (len(lengths) + 1,)
    assert p.cu_seqlens.tolist() == [0, *itertools.accumulate(lengths)]
    assert (p.max_seqlen, p.min_seqlen) == (max(lengths), min(lengths))
    assert isinstance(p.max_seqlen, int) and p.fill_rows == 0 and p.real_rows == len(lengths)
    assert p.cu_seqlens[1:].long().sub(p.starts + p.lengths).abs().sum() == 0  # row i ends where row i+1 starts


@pytest.mark.parametrize(("backend", "causal", "group_tokens"), [
    ("nested", False, 4096), ("flex", False, 4096), ("flex", True, 4096),  # torch's CPU nested SDPA has no causal
    ("grouped", False, 4096), ("grouped", True, 4096), ("grouped", True, 64),  # many texts per group / a few
])
def test_varlen_kernels_equal_a_per_sequence_sdpa_loop_on_the_cpu(backend, causal, group_tokens):
    rng = random.Random(1)
    lengths = random_lengths(rng, 9)
    qkv = torch.randn(sum(lengths), 3, 2, 8, generator=torch.Generator().manual_seed(0))
    p = pack([[1] * n for n in lengths], group_tokens=group_tokens)
    grad = backend != "flex"  # FlexAttention has no CPU backward
    qkv.requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        if backend == "grouped":
            got = packed_mod.attend(qkv.view(-1, 48), p, 2, 8, 0.0, 0.125, causal=causal).view(-1, 2, 8)
        else:
            got = varlen_attention(qkv, p.cu_seqlens, p.max_seqlen, p.min_seqlen, 0.0, 0.125, backend, causal)
        want = reference_attention(qkv, lengths, scale=0.125, causal=causal)
    assert got.shape == want.shape == (sum(lengths), 2, 8)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    if grad:
        (g_got,) = torch.autograd.grad(got.pow(2).sum(), qkv)
        (g_want,) = torch.autograd.grad(want.pow(2).sum(), qkv)
        assert torch.allclose(g_got, g_want, atol=1e-5), (g_got - g_want).abs().max()


@pytest.fixture
def model(tmp_path):
    return make_tiny_model(tmp_path, seed=0)


def no_dropout(model):
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


def test_packed_forward_through_nested_tensors_equals_the_padded_forward(model):
    ids = model.tokenize_ids(TEXTS)
    no_dropout(model).train()
    target = torch.randn(len(TEXTS), model.dim, generator=torch.Generator().manual_seed(0))
    out, grads = [], []
    for run in (lambda: model(packed=pack(ids)), lambda: model(**collate(ids, model.tokenizer.pad_token_id))):
        model.zero_grad(set_to_none=True)
        with force_attention("nested"):  # the padded forward never reaches gte_model.packed
            emb = run()
        (emb * target).sum().backward()
        out.append(emb.detach())
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert torch.allclose(out[0], out[1], atol=1e-5), (out[0] - out[1]).abs().max()
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], rtol=1e-4, atol=1e-6), name


def test_the_cpu_keeps_the_grouped_path_and_cuda_takes_the_first_kernel_that_fits(monkeypatch):
    assert attention_backend("cpu", torch.bfloat16, 0.0) == "grouped"
    monkeypatch.setattr(packed_mod, "_BROKEN", set())
    monkeypatch.setattr(packed_mod, "_flash_attn", lambda: None)  # flash_attn not installed
    monkeypatch.setattr(packed_mod, "_torch_varlen", lambda: object())
    assert attention_backend("cuda", torch.bfloat16, 0.0) == "torch_varlen"
    assert attention_backend("cuda", torch.bfloat16, 0.1) == "nested"  # torch's varlen_attn has no dropout
    assert attention_backend("cuda", torch.float32, 0.0) == "nested"  # flash kernels: fp16/bf16 only
    monkeypatch.setattr(packed_mod, "_flash_attn", lambda: object())
    assert attention_backend("cuda", torch.bfloat16, 0.1) == "flash_attn"
    assert attention_backend("cuda", torch.bfloat16, 0.1, head_dim=12) == "nested"  # flash needs d % 8 == 0
    packed_mod._BROKEN.add(("flash_attn", "cuda", torch.bfloat16, True))
    assert attention_backend("cuda", torch.bfloat16, 0.1) == "nested"
    with force_attention("flex"):
        assert attention_backend("cpu", torch.float32, 0.0) == "flex"
    with pytest.raises(ValueError, match="choose one of"):
        force_attention("padded").__enter__()


def test_a_kernel_that_raises_is_skipped_from_then_on_with_a_warning(model, monkeypatch):
    monkeypatch.setattr(packed_mod, "_BROKEN", set())
    order = ("flex", "grouped")
    monkeypatch.setattr(packed_mod, "attention_backend", lambda device, dtype, p, head_dim: next(
        n for n in order if (n, torch.device(device).type, dtype, p > 0) not in packed_mod._BROKEN))
    calls = []

    def failing(*args, **kwargs):
        calls.append(args[-1])
        raise RuntimeError("no kernel image is available")

    monkeypatch.setattr(packed_mod, "varlen_attention", failing)
    model.eval()
    ids = model.tokenize_ids(TEXTS)
    with torch.no_grad():
        want = model(**collate(ids, model.tokenizer.pad_token_id))
        with pytest.warns(UserWarning, match="'flex' failed"):
            got = model(packed=pack(ids))
        again = model(packed=pack(ids))
    assert calls == ["flex"]  # tried once, then skipped for this (device, dtype, dropout)
    assert torch.allclose(got, want, atol=1e-5) and torch.equal(got, again)


# ---- CUDA ----------------------------------------------------------------------------------------------------------
def cuda_backends(dtype):
    """The kernels that can run this dtype here (FlexAttention only in bf16: each dtype costs it a compile)."""
    names = [n for n in packed_mod.VARLEN_BACKENDS if packed_mod._supports(n, dtype, 0.0, 16)]
    return [n for n in names if n != "flex" or dtype == torch.bfloat16] or pytest.skip(f"no varlen kernel: {dtype}")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 1e-2), (torch.float32, 1e-5)])
def test_packed_varlen_equals_padded_bert_on_cuda(model, dtype, tol):
    model = model.cuda().eval()
    ids = model.tokenize_ids(TEXTS * 3)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    with torch.no_grad(), autocast:
        want = model(**{k: v.cuda() for k, v in collate(ids, model.tokenizer.pad_token_id).items()}).float()
        for backend in cuda_backends(dtype):
            with force_attention(backend):
                got = model(packed=pack(ids).to("cuda")).float()
            assert torch.allclose(got, want, atol=tol, rtol=tol), (backend, (got - want).abs().max().item())


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("causal", [False, True])
def test_varlen_kernels_match_the_per_sequence_loop_with_gradients_on_cuda(causal):
    lengths = random_lengths(random.Random(2), 17)
    p = pack([[1] * n for n in lengths]).to("cuda")
    g = torch.Generator("cuda").manual_seed(0)
    qkv = torch.randn(sum(lengths), 3, 4, 32, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    want = reference_attention(qkv.float(), lengths, scale=32**-0.5, causal=causal)
    (g_want,) = torch.autograd.grad(want.pow(2).sum(), qkv)
    for backend in cuda_backends(torch.bfloat16):
        got = varlen_attention(qkv, p.cu_seqlens, p.max_seqlen, p.min_seqlen, 0.0, 32**-0.5, backend, causal)
        (g_got,) = torch.autograd.grad(got.float().pow(2).sum(), qkv)
        assert torch.allclose(got.float(), want, atol=2e-2, rtol=2e-2), backend
        assert (g_got.float() - g_want.float()).norm() <= 2e-2 * g_want.float().norm(), backend


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cached_step_replays_attention_dropout_on_cuda(model, dtype):
    from train.grad_cache import cached_step
    from train.step import plain_step

    model = model.cuda().train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.2  # large enough that a dropout mask not replayed shows in the gradients
    ids = model.tokenize_ids(TEXTS * 4)
    chunks = [pack(ids[i : i + 6]).to("cuda") for i in range(0, len(ids), 6)]
    target = torch.randn(len(ids), model.dim, device="cuda", generator=torch.Generator("cuda").manual_seed(0))

    def loss_fn(emb):
        return (F.normalize(emb, dim=-1) * target).sum()

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)

    backend = attention_backend("cuda", dtype, 0.2, model.backbone.config.hidden_size // 2)
    results = []
    for step in (cached_step, plain_step):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        loss = step(lambda c: model(packed=c), chunks, loss_fn, autocast=autocast)
        results.append((loss, {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_c, grads_c), (loss_p, grads_p) = results
    assert torch.allclose(loss_c, loss_p, rtol=1e-3), (backend, loss_c.item(), loss_p.item())
    tol = 3e-2 if dtype == torch.bfloat16 else 1e-3  # bf16: the plain step sums chunk gradients in bf16
    for name, g in grads_p.items():
        assert (grads_c[name] - g).norm() <= tol * g.norm() + 1e-6, (backend, name)
