"""Training beyond BERT: each packed family trains a few steps through `gte train` (packed, no fallback notice);
data.*_max_len is held to the backbone's positions; model.rope_theta sets a RoPE backbone's base and nothing else's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gte_model import collate, export_model, load_model, pack
from gte_model.core.config import load_config
from gte_model.core.errors import UserError
from gte_model.families import max_positions
from tests.conftest import FAMILIES, make_tiny_family_model, make_tiny_model
from tests.train.tinydata import TINY_CONFIG, tiny_args, write_tiny_pairs
from train.app.cli import main as gte
from train.build import fit_positions
from train.config import TrainConfig
from train.metrics import read_metrics


def config(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, TINY_CONFIG, list(overrides))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_tiny_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_trains_packed_through_gte_train(family, pairs, tmp_path, capsys):
    (tmp_path / "vocab").mkdir()
    init = export_model(make_tiny_family_model(tmp_path / "vocab", family), tmp_path / "init")
    run_dir = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine's cores are shared
    try:
        rc = gte(["train", *tiny_args(run_dir, pairs, f"model.init_from={init}", "train.packed=true",
                                      "train.max_steps=4", "optim.warmup_steps=1", "train.checkpoint_every=0",
                                      "train.eval_every=0", "data.val_rows=0")])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0, capsys.readouterr().err[-2000:]
    assert "using padded chunks" not in capsys.readouterr().out
    losses = [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert json.loads((run_dir / "gte_record.json").read_text())["stats"]["export_max_abs_diff"] < 1e-5
    assert load_model(run_dir / "export").backbone.config.model_type == family


def test_max_len_above_the_backbone_positions_is_refused_naming_the_key(tmp_path):
    model = make_tiny_model(tmp_path)  # BERT: 512 positions
    fit_positions(model, config("data.doc_max_len=512"))
    with pytest.raises(UserError, match=r"data.doc_max_len=600 exceeds the 512 positions .* data.doc_max_len<=512"):
        fit_positions(model, config("data.doc_max_len=600"))


LIMITS = {"roberta": 79, "xlm-roberta": 79, "mpnet": 78, "modernbert": 80}


@pytest.mark.parametrize(("family", "limit"), LIMITS.items())
def test_roberta_style_positions_lose_the_ones_before_padding_idx_plus_one(family, limit, tmp_path):
    model = make_tiny_family_model(tmp_path, family)  # max_position_embeddings=80; RoBERTa pads with 0, MPNet with 1
    assert max_positions(model.backbone) == limit
    model.eval()
    ids = [[2] + [7] * (limit - 2) + [3]]  # the longest row the table holds
    with torch.no_grad():
        assert torch.allclose(model(packed=pack(ids)), model(**collate(ids, 0)), atol=1e-5)


def test_rope_theta_on_a_backbone_with_absolute_positions_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"model.rope_theta=160000 .* has no rotary position embeddings"):
        fit_positions(make_tiny_model(tmp_path), config("model.rope_theta=160000"))


def test_rope_theta_rebuilds_the_global_rotary_tables_and_reaches_the_export(tmp_path):
    model = make_tiny_family_model(tmp_path, "modernbert").eval()
    rotary = model.backbone.rotary_emb
    local_before, global_before = rotary.sliding_attention_inv_freq.clone(), rotary.full_attention_inv_freq.clone()
    fit_positions(model, config("model.rope_theta=40000"))
    rotary = model.backbone.rotary_emb
    assert torch.equal(rotary.sliding_attention_inv_freq, local_before)
    assert torch.allclose(rotary.full_attention_inv_freq[1], torch.tensor(40000.0 ** (-2 / 16)))
    assert not torch.allclose(rotary.full_attention_inv_freq, global_before)
    ids = model.tokenize_ids(["the red dog and the blue cat run with a small child", "a"])
    with torch.no_grad():
        assert torch.allclose(model(packed=pack(ids)), model(**collate(ids, 0)), atol=1e-5)
    reloaded = load_model(export_model(model, tmp_path / "export"))
    assert reloaded.backbone.config.rope_parameters["full_attention"]["rope_theta"] == 40000
    texts = ["the cat plays piano", "stock price fell today on the news report of the market"]
    np.testing.assert_allclose(reloaded.encode(texts), model.encode(texts), atol=1e-6)
