"""Decoder LLMs on the unpadded path (gte_model.unpadded): a tiny random Qwen3- and Llama-shaped decoder, causal and
bidirectional, packed computes what padded computes: the hidden states of every real token, the last-token pooled
vectors, a contrastive loss and its gradients, with texts of different lengths sharing one CPU attention group and
each in its own. Attention never crosses from one text into the next, and a causal token never sees a later one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gte_model import collate, load_model, pack
from gte_model.decoder import set_bidirectional
from gte_model.families import supports_packing
from gte_model.unpadded import PREFIX, unpadded_forward
from tests.conftest import MIXED_TEXTS
from tests.gte_model.tiny_decoders import DECODERS, make_tiny_decoder

TEXTS = [*MIXED_TEXTS, " ".join(MIXED_TEXTS[2:5])]  # 1 to ~30 tokens each, unsorted on purpose


def tiny_decoder(folder, kind, attention):
    model = load_model(make_tiny_decoder(folder, kind), pooling="last").eval()  # dropout off: masks would differ
    if attention == "bidirectional":
        set_bidirectional(model.backbone)
    return model


def info_nce(emb):
    """A contrastive loss over the batch: text i's positive is text i + half."""
    emb = F.normalize(emb, dim=-1)
    half = emb.shape[0] // 2
    scores = emb[:half] @ emb[half : 2 * half].T / 0.05  # [half, half]
    return F.cross_entropy(scores, torch.arange(half))


@pytest.mark.parametrize("kind", DECODERS)
@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
@pytest.mark.parametrize("group_tokens", [16, 4096])  # one text per attention group / every text in one group
def test_a_packed_decoder_equals_its_padded_forward(kind, attention, group_tokens, tmp_path, one_thread):
    model = tiny_decoder(tmp_path, kind, attention)
    assert supports_packing(model.backbone)
    ids = model.tokenize_ids(TEXTS)
    assert len({len(x) for x in ids}) > 3 and all(x[-1] == model.tokenizer.eos_token_id for x in ids)
    packed = pack(ids, group_tokens=group_tokens)
    batch = collate(ids, model.tokenizer.pad_token_id)
    with torch.no_grad():
        hidden = unpadded_forward(model.backbone, packed)  # [T, H]
        want = model.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    assert model.backbone.config._attn_implementation.startswith(PREFIX)  # the packed attention really ran
    for row, x in enumerate(ids):
        got = hidden[int(packed.starts[row]) : int(packed.starts[row]) + len(x)]
        assert torch.allclose(got, want[row, : len(x)], atol=1e-5), (row, (got - want[row, : len(x)]).abs().max())

    grads, pooled, losses = [], [], []
    for run in ("padded", "packed"):
        model.zero_grad(set_to_none=True)
        emb = model(**batch) if run == "padded" else model(packed=packed)
        loss = info_nce(emb)
        loss.backward()
        pooled.append(emb.detach())
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert torch.allclose(pooled[1], pooled[0], atol=1e-5), (pooled[1] - pooled[0]).abs().max()
    assert torch.allclose(losses[1], losses[0], atol=1e-5), (losses[1], losses[0])
    assert len(grads[0]) > 10 and set(grads[1]) == set(grads[0])
    for name, g in grads[0].items():
        assert (grads[1][name] - g).norm() <= 1e-5 * g.norm(), (name, float((grads[1][name] - g).norm() / g.norm()))


@pytest.mark.parametrize("kind", DECODERS)
def test_packed_attention_is_causal_within_a_text_and_never_crosses_texts(kind, tmp_path, one_thread):
    causal = tiny_decoder(tmp_path / "a", kind, "causal")
    bidirectional = tiny_decoder(tmp_path / "b", kind, "bidirectional")
    ids = causal.tokenize_ids([TEXTS[0], TEXTS[2], TEXTS[1]])  # 9, 29 and 2 tokens
    changed = [ids[0], [*ids[1][:-2], ids[0][1], ids[1][-1]], ids[2]]  # text 1's second-to-last token replaced
    with torch.no_grad():
        for model, earlier_fixed in ((causal, True), (bidirectional, False)):
            a, b = (unpadded_forward(model.backbone, pack(x, group_tokens=4096)) for x in (ids, changed))
            p = pack(ids)
            s1, n1 = int(p.starts[1]), len(ids[1])
            others = torch.cat([torch.arange(0, s1), torch.arange(s1 + n1, a.shape[0])])
            assert (a[others] - b[others]).abs().max() < 1e-6  # texts 0 and 2 never see text 1
            earlier = (a[s1 : s1 + n1 - 2] - b[s1 : s1 + n1 - 2]).abs().max()  # text 1 before the change
            assert earlier < 1e-6 if earlier_fixed else earlier > 1e-3, float(earlier)
            assert (a[s1 + n1 - 1] - b[s1 + n1 - 1]).abs().max() > 1e-3  # its last token sees the change


@pytest.mark.parametrize("kind", DECODERS)
def test_gradient_checkpointing_keeps_a_packed_decoder_packed(kind, tmp_path, one_thread):
    model = tiny_decoder(tmp_path, kind, "causal")
    ids = model.tokenize_ids(TEXTS)
    grads = []
    for checkpointing in (False, True):
        if checkpointing:  # the recomputation in backward must see the layout again (else it would raise)
            model.backbone.gradient_checkpointing_enable({"use_reentrant": False})
            model.train()  # checkpointing runs in training only; these decoders have no dropout
        model.zero_grad(set_to_none=True)
        info_nce(model(packed=pack(ids, group_tokens=64))).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert set(grads[1]) == set(grads[0])
    for name, g in grads[0].items():
        assert (grads[1][name] - g).norm() <= 1e-5 * g.norm(), name


@pytest.mark.parametrize("softcap", [50.0, None])
def test_a_decoder_whose_attention_soft_caps_its_scores_trains_padded(softcap):
    # Gemma 2 caps its attention scores (tanh): packed kernels cannot, so it must take the padded path, not fail there
    from transformers import Gemma2Config, Gemma2Model

    config = Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, attn_logit_softcapping=softcap)
    assert supports_packing(Gemma2Model(config)) is (softcap is None)
