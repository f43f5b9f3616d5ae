"""The packed forward of every family (gte_model.families) computes what the padded HF forward of that backbone
computes: BERT, RoBERTa, XLM-RoBERTa, MPNet and ModernBERT (their own code), GTE v1.5 and NomicBERT
(gte_model.unpadded), each a tiny random model; gradients agree; the gradient cache replays it; and a decoder, or a
backbone with its own attention code, is not packed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gte_model import collate, pack, supports_packing
from tests.conftest import FAMILIES, MIXED_TEXTS, make_tiny_family_model, make_tiny_model

# Longer texts too: ModernBERT's local layers (4 positions either side here) must cut inside a row.
TEXTS = [*MIXED_TEXTS, " ".join(MIXED_TEXTS[2:5])]


@pytest.fixture(params=("bert", *FAMILIES))
def model(request, tmp_path):
    if request.param == "bert":
        return make_tiny_model(tmp_path, seed=0)
    return make_tiny_family_model(tmp_path, request.param, seed=0)


def padded(model, ids):
    return model(**collate(ids, model.tokenizer.pad_token_id))


def set_dropout(model, p):
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
        if isinstance(getattr(m, "attention_dropout", None), float):  # ModernBertAttention: a float, no module
            m.attention_dropout = p


def test_the_tiny_families_are_packed(model):
    assert supports_packing(model.backbone)


@pytest.mark.parametrize("group_tokens", [16, 4096])  # one text per attention group / every text in one group
def test_packed_forward_equals_padded_forward(model, group_tokens):
    model.eval()
    ids = model.tokenize_ids(TEXTS)  # unsorted on purpose
    assert max(map(len, ids)) > 20
    with torch.no_grad():
        got = model(packed=pack(ids, group_tokens=group_tokens))
        want = padded(model, ids)
    assert got.shape == want.shape == (len(TEXTS), model.dim)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert not torch.allclose(got[0], got[1], atol=1e-3)  # the rows really differ


def test_packed_gradients_equal_padded_gradients_without_dropout(model):
    set_dropout(model, 0.0)
    ids = model.tokenize_ids(TEXTS)
    target = torch.randn(len(TEXTS), model.dim, generator=torch.Generator().manual_seed(0))
    grads = []
    for forward in (lambda: model(packed=pack(ids, group_tokens=64)), lambda: padded(model, ids)):
        model.zero_grad(set_to_none=True)
        (forward() * target).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    # The padded forward also reaches the padding embedding rows with a zero gradient; the pooler is frozen.
    assert len(grads[0]) > 10 and set(grads[0]) == set(grads[1])
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], rtol=1e-4, atol=1e-6), name


def test_cached_step_replays_the_packed_forward_with_dropout_on(model):
    from train.grad_cache import cached_step
    from train.step import make_chunks, plain_step

    set_dropout(model, 0.2)  # large enough that a dropout mask not replayed shows in the gradients
    ids = model.tokenize_ids(TEXTS * 2)
    chunks, order = make_chunks(ids, 5, model.tokenizer.pad_token_id, packed=True)
    target = torch.randn(len(ids), model.dim, generator=torch.Generator().manual_seed(0))[order]

    def loss_fn(emb):
        return (F.normalize(emb, dim=-1) * target).sum()

    results = []
    for seed, step in ((0, cached_step), (0, plain_step), (1, plain_step)):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        loss = step(lambda c: model(packed=c), chunks, loss_fn)
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_c, grads_c), (loss_p, grads_p), (loss_other, _) = results
    assert not torch.allclose(loss_p, loss_other)  # dropout is on
    assert torch.allclose(loss_c, loss_p, rtol=1e-6, atol=0), (loss_c.item(), loss_p.item())
    assert grads_c.keys() == grads_p.keys() and len(grads_c) > 10
    for name, g in grads_p.items():
        assert torch.allclose(grads_c[name], g, rtol=1e-5, atol=1e-6), name


def test_bert_is_packed_and_decoders_or_models_with_their_own_attention_code_are_not(tmp_path):
    from transformers import DebertaV2Config, DebertaV2Model, RobertaConfig, RobertaModel

    assert supports_packing(make_tiny_model(tmp_path).backbone)
    small = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    assert not supports_packing(RobertaModel(RobertaConfig(**small, is_decoder=True)))
    deberta = DebertaV2Model(DebertaV2Config(**small))  # relative attention in its own code, not the interface
    assert not supports_packing(deberta)
    from gte_model.families import packed_forward

    with pytest.raises(ValueError, match="DebertaV2Model does not run attention through transformers' attention"):
        packed_forward(deberta, pack([[1, 2, 3]]))


def test_modernbert_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    model = make_tiny_family_model(tmp_path, "modernbert")
    set_dropout(model, 0.1)
    ids = model.tokenize_ids(TEXTS)
    out = []
    for checkpointing in (False, True):
        if checkpointing:
            model.backbone.activation_checkpointing_enable({"use_reentrant": False})
        model.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        loss = model(packed=pack(ids)).pow(2).sum()
        loss.backward()
        out.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    assert all(layer.gradient_checkpointing for layer in model.backbone.layers)  # what packed_forward reads
    assert torch.equal(out[0][0], out[1][0])
    for name, g in out[0][1].items():
        assert torch.allclose(g, out[1][1][name], rtol=1e-5, atol=1e-7), name
