"""Decoder LLMs as embedders (gte_model.decoder, pooling=last): the tokenizer ends every text on EOS, a padded batch
(right or left) gives each text the vector it gets alone, causal or bidirectional, and an export (also LoRA-merged)
gives the same vectors in sentence-transformers (lasttoken pooling) and AutoModel + the documented pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

from gte_model import export_model, load_model
from gte_model.decoder import is_bidirectional, set_bidirectional
from gte_model.lora import add_lora, linear_names
from gte_model.pooling import pool
from tests.conftest import MIXED_TEXTS, make_tiny_model
from tests.gte_model.tiny_decoders import DECODERS, make_tiny_decoder


@pytest.fixture(params=DECODERS)
def decoder_dir(request, tmp_path):
    return make_tiny_decoder(tmp_path / request.param, request.param)


def test_last_pooling_reads_each_rows_last_kept_token_under_right_and_left_padding():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)  # token t of row b holds 4b + t
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool(hidden, right, "last").flatten().tolist() == [2.0, 7.0]
    assert pool(hidden, left, "last").flatten().tolist() == [3.0, 7.0]


def test_loading_with_last_pooling_ends_every_text_on_eos_and_pads(decoder_dir):
    model = load_model(decoder_dir, pooling="last")
    tok = model.tokenizer
    assert tok.pad_token_id is not None  # Llama's has none: it pads with EOS
    for ids in model.tokenize_ids(MIXED_TEXTS):
        assert ids[-1] == tok.eos_token_id and tok.eos_token_id not in ids[:-1]
    if tok.bos_token_id is not None:  # Llama's BOS is kept
        assert all(ids[0] == tok.bos_token_id for ids in model.tokenize_ids(MIXED_TEXTS))
    long = model.tokenize_ids(["the cat " * 40], max_seq_len=8)[0]
    assert len(long) == 8 and long[-1] == tok.eos_token_id  # truncation keeps the EOS
    assert model.backbone.config.use_cache is False


def test_an_encoder_tokenizer_keeps_its_own_last_token(tmp_path):
    from gte_model.decoder import append_eos

    tok = make_tiny_model(tmp_path).tokenizer  # BERT: no EOS token, texts end on [SEP]
    before = tok(MIXED_TEXTS)["input_ids"]
    append_eos(tok, tmp_path)
    assert tok(MIXED_TEXTS)["input_ids"] == before


def _alone(model, texts):
    return np.stack([model.encode([t])[0] for t in texts])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_padded_batch_embeds_each_text_as_it_embeds_it_alone(decoder_dir, bidirectional):
    model = load_model(decoder_dir, pooling="last")
    if bidirectional:
        set_bidirectional(model.backbone)
    batch = model.encode(MIXED_TEXTS, batch_size=len(MIXED_TEXTS))  # right padding
    np.testing.assert_allclose(batch, _alone(model, MIXED_TEXTS), atol=1e-5, rtol=0)
    model.tokenizer.padding_side = "left"
    enc = model.tokenizer(MIXED_TEXTS, padding=True, return_tensors="pt")
    assert (enc["attention_mask"][:, 0] == 0).any()  # some rows really are left-padded
    with torch.no_grad():
        left = F.normalize(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]), dim=-1)
    np.testing.assert_allclose(left.numpy(), batch, atol=1e-5, rtol=0)


def test_bidirectional_attention_lets_early_tokens_see_later_ones(decoder_dir):
    model = load_model(decoder_dir, pooling="last").eval()
    enc = model.tokenize(["the cat plays piano", "the dog plays guitar"])  # the same first tokens, then not

    def first_states():
        with torch.no_grad():
            out = model.backbone(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        return out.last_hidden_state[:, 0]

    causal = first_states()
    torch.testing.assert_close(causal[0], causal[1])  # causally the first token sees only itself
    set_bidirectional(model.backbone)
    assert is_bidirectional(model.backbone)
    both = first_states()
    assert (both[0] - both[1]).abs().max() > 1e-3


def test_bidirectional_refuses_an_encoder(tmp_path):
    with pytest.raises(ValueError, match="encoder: its attention already runs both ways"):
        set_bidirectional(make_tiny_model(tmp_path).backbone)


def automodel_last_token(folder, texts, padding_side):
    """The card's recipe: AutoTokenizer + AutoModel, the hidden state at each text's last token, L2-normalised."""
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.padding_side = padding_side
    model = AutoModel.from_pretrained(str(folder)).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state  # [B, T, H]
    last = enc["attention_mask"].sum(1) - 1 if padding_side == "right" else torch.full((len(texts),), -1)
    return F.normalize(hidden[torch.arange(len(texts)), last], dim=-1).numpy()


def assert_export_parity(model, export_dir):
    ours = model.encode(MIXED_TEXTS, batch_size=4)
    st = SentenceTransformer(str(export_dir), device="cpu")
    np.testing.assert_allclose(st.encode(MIXED_TEXTS, batch_size=4), ours, atol=1e-5, rtol=0)
    for side in ("right", "left"):
        np.testing.assert_allclose(automodel_last_token(export_dir, MIXED_TEXTS, side), ours, atol=1e-5, rtol=0)
    reloaded = load_model(export_dir)
    assert reloaded.pooling == "last"
    np.testing.assert_allclose(reloaded.encode(MIXED_TEXTS), ours, atol=1e-6, rtol=0)


def _train_a_little(model, steps=3):
    """A few optimiser steps, so the exported weights are not an initialisation anyone could reproduce."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5)
    enc = model.tokenize(MIXED_TEXTS)
    for _ in range(steps):
        opt.zero_grad()
        emb = F.normalize(model(**enc), dim=-1)
        (emb @ emb.T).sum().backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_export_gives_the_same_vectors_in_sentence_transformers_and_automodel(decoder_dir, tmp_path, bidirectional):
    model = load_model(decoder_dir, pooling="last")
    if bidirectional:
        set_bidirectional(model.backbone)
    _train_a_little(model)
    export = export_model(model, tmp_path / "export")
    assert_export_parity(model, export)
    assert is_bidirectional(AutoModel.from_pretrained(str(export))) is bidirectional
    assert "attention_mask.sum(1) - 1" in (export / "README.md").read_text()


def test_lora_on_decoder_projections_exports_merged_to_the_same_vectors(decoder_dir, tmp_path):
    model = load_model(decoder_dir, pooling="last")
    assert linear_names(model.backbone) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                            "down_proj"]
    add_lora(model.backbone, r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    trainable = {n.split(".lora_")[0].rpartition(".")[2] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"q_proj", "v_proj", "down_proj"}
    before = model.encode(MIXED_TEXTS)
    _train_a_little(model)
    assert np.abs(model.encode(MIXED_TEXTS) - before).max() > 1e-4  # the adapters moved
    export = export_model(model, tmp_path / "export")  # merged: a plain decoder folder
    assert not (export / "adapter_config.json").exists()
    assert_export_parity(model, export)
