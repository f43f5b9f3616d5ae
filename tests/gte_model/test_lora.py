"""LoRA (gte_model.lora) on the tiny BERT: the packed forward uses the adapters, the merged export and the adapter
export reload (SentenceTransformer, AutoModel, our loader) to the adapted model's vectors, unknown layer names fail."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from gte_model import collate, export_model, load_model, pack
from gte_model.lora import add_lora, has_lora, linear_names, lora_settings, without_lora
from tests.conftest import MIXED_TEXTS, make_tiny_model
from tests.gte_model.test_export_parity import automodel_vectors

pytest.importorskip("peft")


@pytest.fixture
def adapted(tmp_path):
    """The tiny BERT with rank-4 adapters whose B is random (B = 0 would make them invisible)."""
    model = make_tiny_model(tmp_path, seed=0)
    add_lora(model.backbone, r=4, alpha=8)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    return model.eval()


def test_only_the_adapters_are_trainable(adapted):
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # every encoder Linear is adapted (2 layers x 6), BERT's unused pooler is not
    assert len(trainable) == 2 * 2 * 6
    assert lora_settings(adapted.backbone) == {"r": 4, "alpha": 8, "dropout": 0.0,
                                               "target_modules": ["dense", "key", "query", "value"]}


def test_packed_forward_runs_the_adapters_like_the_padded_forward(adapted):
    ids = adapted.tokenize_ids(MIXED_TEXTS)
    with torch.no_grad():
        got = adapted(packed=pack(ids))
        want = adapted(**collate(ids, adapted.tokenizer.pad_token_id))
    base = base_vectors(adapted, ids)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert not torch.allclose(got, base, atol=1e-3), "the adapters changed nothing: the test tests nothing"


def base_vectors(model, ids):
    """Mean-pooled vectors of the backbone with its adapters dropped."""
    batch = collate(ids, model.tokenizer.pad_token_id)
    with torch.no_grad():
        out = without_lora(model.backbone, merge=False)(**batch).last_hidden_state  # [B, T, H]
    mask = batch["attention_mask"][..., None]
    return (out * mask).sum(1) / mask.sum(1)


@pytest.mark.parametrize("how", ["merged", "adapter"])
def test_export_reloads_to_the_adapted_models_vectors(adapted, tmp_path, how):
    out = export_model(adapted, tmp_path / how, lora_export=how)
    assert (out / "adapter_config.json").is_file() == (how == "adapter")
    want = adapted.encode(MIXED_TEXTS)
    st = SentenceTransformer(str(out), device="cpu").encode(MIXED_TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(st, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(automodel_vectors(out, MIXED_TEXTS, adapted.max_seq_len, True), want, atol=1e-5,
                               rtol=0)
    np.testing.assert_allclose(load_model(out).encode(MIXED_TEXTS), want, atol=1e-5, rtol=0)
    meta = json.loads((out / "gte_export.json").read_text())
    assert meta["lora"]["r"] == 4 and meta["lora"]["export"] == how
    card = (out / "README.md").read_text()
    assert "r=4, alpha=8" in card and "| base model | preset:tiny |" in card
    assert has_lora(adapted.backbone)  # exporting left the trained model as it was


def test_an_unknown_target_module_names_the_backbones_linear_layers(tmp_path):
    model = make_tiny_model(tmp_path, seed=0)
    assert linear_names(model.backbone) == ["query", "key", "value", "dense"]
    with pytest.raises(ValueError, match=r"no Linear layer named q_proj; choose from query, key, value, dense") as e:
        add_lora(model.backbone, r=4, alpha=8, target_modules=["query", "q_proj"])
    assert "\n" not in str(e.value)
