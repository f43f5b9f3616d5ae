"""The generic unpadded forward (gte_model.unpadded): any encoder whose attention goes through transformers' attention
interface, packed, computes what its padded forward computes: GTE v1.5 and NomicBERT (which use it), the families
with their own code run through it too (BERT, RoBERTa, XLM-R, ModernBERT with its local window; the benchmark
compares the two), and DistilBERT, which no family file knows. The padded forward is unchanged after the switch,
gradient checkpointing stays packed, and weights a loader split out of a fused matrix (views sharing one storage)
checkpoint and load back exactly."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from gte_model import collate, export_model, load_model, pack
from gte_model.pooling import pool_packed
from gte_model.unpadded import PREFIX, unpadded_forward
from tests.conftest import MIXED_TEXTS, make_tiny_family_model, make_tiny_model
from train.checkpoint import own_storage

TEXTS = [*MIXED_TEXTS, " ".join(MIXED_TEXTS[2:5])]  # up to ~30 tokens: past ModernBERT's local window here


def generic(model, ids, group_tokens=4096):
    packed = pack(ids, group_tokens=group_tokens)
    hidden = unpadded_forward(model.backbone, packed)  # [T, H]
    return pool_packed(hidden, packed.seq_index, packed.lengths, packed.starts, model.pooling)


def padded(model, ids):
    return model(**collate(ids, model.tokenizer.pad_token_id))


def distilbert(folder):
    from transformers import BertTokenizerFast, DistilBertConfig, DistilBertModel

    from gte_model import GTEModel
    from tests.conftest import write_vocab

    write_vocab(folder)
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    return GTEModel(DistilBertModel(config), tokenizer)


def tiny(family, folder):
    if family == "bert":
        return make_tiny_model(folder)
    if family == "distilbert":
        return distilbert(folder)
    return make_tiny_family_model(folder, family)


@pytest.mark.parametrize("family", ["gte", "nomic_bert", "bert", "roberta", "xlm-roberta", "modernbert", "distilbert"])
@pytest.mark.parametrize("group_tokens", [16, 4096])  # one text per attention group / every text in one group
def test_the_generic_unpadded_forward_equals_the_padded_forward(family, group_tokens, tmp_path, one_thread):
    model = tiny(family, tmp_path).eval()
    ids = model.tokenize_ids(TEXTS)  # unsorted on purpose
    with torch.no_grad():
        got, want = generic(model, ids, group_tokens), padded(model, ids)
    assert model.backbone.config._attn_implementation.startswith(PREFIX)  # the packed attention really ran
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert not torch.allclose(got[0], got[1], atol=1e-3)  # the rows really differ


@pytest.mark.parametrize("family", ["gte", "nomic_bert"])
def test_generic_gradients_equal_padded_gradients_with_checkpointing(family, tmp_path, one_thread):
    model = tiny(family, tmp_path).eval()  # dropout off: both paths draw different masks
    ids = model.tokenize_ids(TEXTS)
    target = torch.randn(len(TEXTS), model.dim, generator=torch.Generator().manual_seed(0))
    grads = []
    for run in ("padded", "packed", "packed+checkpointing"):
        if run == "packed+checkpointing":  # the recomputation in backward must stay packed
            model.backbone.activation_checkpointing_enable({"use_reentrant": False})
            model.train()
            for m in model.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.p = 0.0
        model.zero_grad(set_to_none=True)
        emb = padded(model, ids) if run == "padded" else model(packed=pack(ids, group_tokens=64))
        (emb * target).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert len(grads[0]) > 10
    for other in grads[1:]:
        assert set(other) == set(grads[0])
        for name, g in grads[0].items():
            assert torch.allclose(other[name], g, rtol=1e-4, atol=1e-6), name


def test_the_padded_forward_is_unchanged_after_a_packed_one(tmp_path, one_thread):
    model = tiny("gte", tmp_path).eval()
    before = model.encode(TEXTS)
    with torch.no_grad():
        model(packed=pack(model.tokenize_ids(TEXTS)))
    assert model.backbone.config._attn_implementation == PREFIX + "sdpa"
    assert torch.equal(torch.from_numpy(model.encode(TEXTS)), torch.from_numpy(before))


@pytest.mark.parametrize("family", ["gte", "nomic_bert"])
def test_fused_weights_split_into_views_checkpoint_and_load_back_exactly(family, tmp_path, one_thread):
    (tmp_path / "vocab").mkdir()
    folder = export_model(make_tiny_family_model(tmp_path / "vocab", family, seed=1), tmp_path / "init")
    loaded = load_model(folder)
    state = loaded.state_dict()
    q, k = state["backbone.layers.0.self_attn.q_proj.weight"], state["backbone.layers.0.self_attn.k_proj.weight"]
    assert q.untyped_storage().data_ptr() == k.untyped_storage().data_ptr()  # what safetensors refused
    save_file(own_storage(state), str(tmp_path / "model.safetensors"))
    fresh = load_model(folder)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, state[name]), name
