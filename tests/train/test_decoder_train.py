"""`gte train` on tiny random decoder LLMs (Qwen3- and Llama-shaped, tests.gte_model.tiny_decoders): last-token
pooling, a query instruction per source, optional bidirectional attention and LoRA, on the packed path; the export
gives the trained model's vectors in sentence-transformers. (Exact resume after SIGKILL: tests/train/test_resume.py)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from gte_model import load_model
from tests.conftest import MIXED_TEXTS
from tests.gte_model.tiny_decoders import DECODERS, make_tiny_decoder
from tests.train.tinydata import train_tiny, write_tiny_pairs
from train.metrics import read_metrics

INSTRUCTION = "Instruct: find the matching text. Query: "


@pytest.mark.parametrize("kind", DECODERS)
@pytest.mark.parametrize("variant", ["full", "lora-bidirectional"])
def test_a_decoder_trains_and_its_export_gives_the_trained_vectors(tmp_path, kind, variant, capsys):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    init = make_tiny_decoder(tmp_path / "init", kind)
    extra = ("model.lora.r=4", "model.lora.alpha=8", "model.lora.target_modules=[q_proj,k_proj,v_proj,o_proj]",
             "model.bidirectional=true") if variant != "full" else ()
    run = tmp_path / "run"
    prompts = f"data.prompts={{alpha: {{query: '{INSTRUCTION}'}}}}"  # the instruction on alpha's queries only
    code = train_tiny(run, pairs, f"model.init_from={init}", "model.pooling=last", "train.max_steps=6",
                      "train.checkpoint_every=3", "train.eval_every=3", prompts, *extra)
    assert code == 0
    assert "using padded chunks" not in capsys.readouterr().out  # decoders train packed (gte_model.unpadded)
    losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert len(losses) == 6 and all(np.isfinite(losses))

    export = run / "export"
    meta = json.loads((export / "gte_export.json").read_text())
    assert meta["pooling"] == "last" and meta["prompts"]["alpha"] == INSTRUCTION
    assert json.loads((export / "1_Pooling" / "config.json").read_text())["pooling_mode_lasttoken"] is True
    config = json.loads((export / "config.json").read_text())
    assert config.get("is_causal", True) is (variant == "full")
    if variant != "full":
        assert meta["lora"]["export"] == "merged" and not (export / "adapter_config.json").exists()
    model = load_model(export)
    st = SentenceTransformer(str(export), device="cpu")
    for prompt_name in (None, "alpha"):  # the source's instruction is applied to queries by name
        ours = model.encode(MIXED_TEXTS, prompt_name=prompt_name)
        np.testing.assert_allclose(st.encode(MIXED_TEXTS, prompt_name=prompt_name), ours, atol=1e-5, rtol=0)
    untrained = load_model(init, pooling="last").encode(MIXED_TEXTS)
    assert np.abs(model.encode(MIXED_TEXTS) - untrained).max() > 1e-3  # training moved the model
