"""Loading: presets, packaged names, folders, and clear errors for what cannot load."""

from __future__ import annotations

import pytest
import torch

from gte_model import ModelLoadError, export_model, load_model
from gte_model.core.errors import UserError
from gte_model.presets import preset_config
from tests.conftest import make_tiny_model


def test_size_presets_have_the_gte_shapes():
    small = preset_config("gte-small", vocab_size=30522)
    assert (small.num_hidden_layers, small.hidden_size, small.num_attention_heads, small.intermediate_size) == (
        12,
        384,
        12,
        1536,
    )
    base = preset_config("gte-base", vocab_size=30522)
    assert (base.num_hidden_layers, base.hidden_size) == (12, 768)
    large = preset_config("gte-large", vocab_size=30522)
    assert (large.num_hidden_layers, large.hidden_size, large.num_attention_heads) == (24, 1024, 16)


def test_gte_presets_stay_bert_and_gte_modern_base_is_a_modernbert_shape():
    assert {preset_config(n, vocab_size=30522).model_type for n in ("gte-small", "gte-base", "gte-large")} == {"bert"}
    ids = {"pad_token_id": 0, "cls_token_id": 101, "sep_token_id": 102}
    modern = preset_config("gte-modern-base", vocab_size=30522, special_ids=ids)
    assert modern.model_type == "modernbert"
    shape = (modern.num_hidden_layers, modern.hidden_size, modern.num_attention_heads, modern.intermediate_size)
    assert shape == (22, 768, 12, 1152)
    assert modern.layer_types[:4] == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    assert (modern.local_attention, modern.max_position_embeddings) == (128, 8192)
    thetas = {kind: p["rope_theta"] for kind, p in modern.rope_parameters.items()}
    assert thetas == {"full_attention": 160_000, "sliding_attention": 10_000}
    assert (modern.pad_token_id, modern.cls_token_id, modern.bos_token_id, modern.eos_token_id) == (0, 101, 101, 102)


def test_preset_name_builds_a_fresh_model_with_the_packaged_tokenizer():
    model = load_model("tiny")
    assert model.dim == 32 and len(model.tokenizer) == 30522 and model.base_model == "preset:tiny"


def test_unknown_name_says_what_was_tried(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_model(str(tmp_path / "nope"))
    msg = str(err.value)
    assert "preset" in msg and "packaged" in msg and "nope" in msg


def test_folder_without_weights_names_path_and_missing_file(tiny_model, tmp_path):
    export = export_model(tiny_model, tmp_path / "m")
    (export / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"missing weights") as err:
        load_model(export)
    assert str(export) in str(err.value)


def test_folder_without_config_names_it(tiny_model, tmp_path):
    export = export_model(tiny_model, tmp_path / "m")
    (export / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(export)


def test_corrupt_weights_get_an_error_naming_the_folder(tiny_model, tmp_path):
    export = export_model(tiny_model, tmp_path / "m")
    weights = export / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="failed to load") as err:
        load_model(export)
    assert str(export) in str(err.value)


def test_round_trip_keeps_settings(tiny_model, tmp_path):
    tiny_model.max_seq_len = 40
    tiny_model.prompts = {"query": "query: "}
    reloaded = load_model(export_model(tiny_model, tmp_path / "m"))
    assert (reloaded.max_seq_len, reloaded.prompts, reloaded.base_model) == (40, {"query": "query: "}, "preset:tiny")


def test_remote_code_is_refused_by_default(tiny_model, tmp_path):
    import json

    export = export_model(tiny_model, tmp_path / "m")
    cfg = json.loads((export / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    cfg["model_type"] = "evil"
    (export / "config.json").write_text(json.dumps(cfg))
    (export / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelLoadError):
        load_model(export)


# ---- user errors: one line naming the path and the fix (finding 13) ----------------------------------------------
def test_model_load_error_is_a_user_error_and_still_a_file_not_found_error(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_model(str(tmp_path / "nope"))
    assert isinstance(err.value, UserError) and isinstance(err.value, FileNotFoundError)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(tmp_path / "nope") + ": ")


def test_truncated_weights_error_is_one_line_naming_the_file_and_the_fix(tiny_model, tmp_path):
    export = export_model(tiny_model, tmp_path / "m")
    weights = export / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ModelLoadError) as err:
        load_model(export)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{weights}: failed to load") and "export the model again" in msg


# ---- weights: safetensors first (finding 10), no NaN (finding 1) -------------------------------------------------
def test_a_folder_with_safetensors_and_a_bin_loads_the_safetensors(tiny_model, tmp_path):
    export = export_model(tiny_model, tmp_path / "m")
    other = make_tiny_model(tmp_path, seed=1).backbone.state_dict()  # different random weights
    torch.save(other, export / "pytorch_model.bin")
    name = "embeddings.word_embeddings.weight"
    assert not torch.equal(other[name], tiny_model.backbone.state_dict()[name])
    loaded = load_model(export).backbone.state_dict()[name]
    torch.testing.assert_close(loaded, tiny_model.backbone.state_dict()[name], rtol=0, atol=0)


def test_a_folder_with_only_a_bin_still_loads_it(tiny_model, tmp_path):
    export = export_model(tiny_model, tmp_path / "m")
    (export / "model.safetensors").unlink()
    torch.save(tiny_model.backbone.state_dict(), export / "pytorch_model.bin")
    name = "encoder.layer.1.output.dense.weight"
    torch.testing.assert_close(load_model(export).backbone.state_dict()[name], tiny_model.backbone.state_dict()[name])


def test_weights_holding_nan_are_refused_at_load_naming_the_file(tiny_model, tmp_path):
    export = export_model(tiny_model, tmp_path / "m")
    with torch.no_grad():  # what a diverged run leaves: a few NaN and an inf in one layer
        weight = tiny_model.backbone.encoder.layer[0].attention.self.query.weight
        weight[0, :3] = float("nan")
        weight[1, 0] = float("inf")
    tiny_model.backbone.save_pretrained(str(export), safe_serialization=True)
    with pytest.raises(ModelLoadError) as err:
        load_model(export)
    msg = str(err.value)
    assert msg.startswith(f"{export / 'model.safetensors'}: weights hold 4 non-finite values") and "diverged" in msg
    assert "\n" not in msg
