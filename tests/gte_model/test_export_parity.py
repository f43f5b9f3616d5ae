"""Export parity: our encode, SentenceTransformer(export) and AutoModel + mean pooling give the same vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

from gte_model import export_model, load_model
from tests.conftest import FAMILIES, make_tiny_family_model

SENTENCES = [
    "A man is playing a guitar.",
    "hi",
    "The stock market fell sharply today after the central bank announced an unexpected rise in interest rates, "
    "surprising analysts who had predicted a pause until the end of the year.",
    "Debian package: a library for reading and writing compressed archives in several formats.",
    "Who wrote the novel?",
    "Python's asyncio module provides infrastructure for writing single-threaded concurrent code using coroutines, "
    "multiplexing I/O access over sockets and other resources, running network clients and servers. " * 3,
] * 6  # 36 texts: batch 32 spans two batches


def automodel_vectors(folder, texts, max_len, normalize):
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    out = []
    with torch.inference_mode():
        for text in texts:  # one at a time: no padding at all, the plainest possible reference
            enc = tok([text], truncation=True, max_length=max_len, return_tensors="pt")
            hidden = model(**enc).last_hidden_state  # [1, T, H]
            vec = hidden.mean(dim=1)
            out.append(F.normalize(vec, dim=-1) if normalize else vec)
    return torch.cat(out).numpy()


def assert_parity(model, export_dir):
    ours = {bs: model.encode(SENTENCES, batch_size=bs) for bs in (1, 32)}
    st = SentenceTransformer(str(export_dir), device="cpu")
    assert st.max_seq_length == model.max_seq_len
    theirs = {bs: st.encode(SENTENCES, batch_size=bs, convert_to_numpy=True) for bs in (1, 32)}
    reference = automodel_vectors(export_dir, SENTENCES, model.max_seq_len, model.normalize)
    for bs in (1, 32):
        np.testing.assert_allclose(ours[bs], reference, atol=1e-5, rtol=0)
        np.testing.assert_allclose(theirs[bs], reference, atol=1e-5, rtol=0)


@pytest.mark.integration
def test_packaged_minilm_export_matches_sentence_transformers_and_automodel(minilm, tmp_path):
    export = export_model(minilm, tmp_path / "export")
    assert_parity(minilm, export)


def train_a_little(model):
    """A few real optimiser steps so the weights are not the initialisation anyone could reproduce."""
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    batch = model.tokenize(["the cat plays", "a dog runs", "the market fell today", "a man plays guitar"])
    for _ in range(3):
        emb = F.normalize(model(**batch), dim=-1)
        loss = -(emb[:2] * emb[2:]).sum()
        loss.backward()
        optim.step()
        optim.zero_grad()


def test_trained_tiny_model_export_matches_sentence_transformers_and_automodel(tiny_model, tmp_path):
    train_a_little(tiny_model)
    tiny_model.max_seq_len = 48
    tiny_model.prompts = {"query": "query: ", "document": ""}
    export = export_model(tiny_model, tmp_path / "export")
    assert_parity(tiny_model, export)
    st = SentenceTransformer(str(export), device="cpu")
    np.testing.assert_allclose(tiny_model.encode(["the cat"], prompt_name="query"),
                               tiny_model.encode(["query: the cat"]), atol=1e-6)
    np.testing.assert_allclose(
        st.encode(["the cat"], prompt_name="query"), tiny_model.encode(["the cat"], prompt_name="query"), atol=1e-5
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_exports_to_the_trained_vectors_and_names_base_model_and_family(family, tmp_path):
    model = make_tiny_family_model(tmp_path, family)
    train_a_little(model)
    model.max_seq_len = 48
    export = export_model(model, tmp_path / "export")
    assert_parity(model, export)
    card = (export / "README.md").read_text()
    assert f"| base model | tiny-{family} |" in card and f"| family | {family} |" in card
    assert load_model(export).backbone.config.model_type == family


def test_export_writes_every_file_clients_need(tiny_model, tmp_path):
    export = export_model(
        tiny_model, tmp_path / "out", train_config={"optim": {"lr": 0.1}}, eval_results={"sts-b": {"spearman": 0.5}}
    )
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "config_sentence_transformers.json",
        "README.md",
        ".gte-owner",
    ):
        assert (export / name).is_file(), name
    pooling = json.loads((export / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    card = (export / "README.md").read_text()
    assert "| base model | preset:tiny |" in card and "| family | bert |" in card
    assert "| dimensions | 32 |" in card and '"lr": 0.1' in card and "0.5000" in card


def test_cls_pooling_and_no_normalisation_survive_export(tiny_model, tmp_path):
    tiny_model.pooling = "cls"
    tiny_model.normalize = False
    export = export_model(tiny_model, tmp_path / "out")
    reloaded = load_model(export)
    assert (reloaded.pooling, reloaded.normalize) == ("cls", False)
    st = SentenceTransformer(str(export), device="cpu")
    np.testing.assert_allclose(st.encode(SENTENCES[:4]), tiny_model.encode(SENTENCES[:4]), atol=1e-5)
