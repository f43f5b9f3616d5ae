"""Loading: presets, packaged names, folders, and clear errors for what cannot load."""

from __future__ import annotations

import pytest

from gte_model import ModelLoadError, load_model
from gte_model.presets import preset_config


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


def test_preset_name_builds_a_fresh_model_with_the_packaged_tokenizer():
    model = load_model("tiny")
    assert model.dim == 32 and len(model.tokenizer) == 30522 and model.base_model == "preset:tiny"


def test_unknown_name_says_what_was_tried(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_model(str(tmp_path / "nope"))
    msg = str(err.value)
    assert "preset" in msg and "packaged" in msg and "nope" in msg


def test_folder_without_weights_names_path_and_missing_file(tiny_model, tmp_path):
    export = tiny_model.save_pretrained(tmp_path / "m")
    (export / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"missing weights") as err:
        load_model(export)
    assert str(export) in str(err.value)


def test_folder_without_config_names_it(tiny_model, tmp_path):
    export = tiny_model.save_pretrained(tmp_path / "m")
    (export / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(export)


def test_corrupt_weights_get_an_error_naming_the_folder(tiny_model, tmp_path):
    export = tiny_model.save_pretrained(tmp_path / "m")
    weights = export / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="failed to load") as err:
        load_model(export)
    assert str(export) in str(err.value)


def test_round_trip_keeps_settings(tiny_model, tmp_path):
    tiny_model.max_seq_len = 40
    tiny_model.prompts = {"query": "query: "}
    reloaded = load_model(tiny_model.save_pretrained(tmp_path / "m"))
    assert (reloaded.max_seq_len, reloaded.prompts, reloaded.base_model) == (40, {"query": "query: "}, "preset:tiny")


def test_remote_code_is_refused_by_default(tiny_model, tmp_path):
    import json

    export = tiny_model.save_pretrained(tmp_path / "m")
    cfg = json.loads((export / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    cfg["model_type"] = "evil"
    (export / "config.json").write_text(json.dumps(cfg))
    (export / "modeling_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ModelLoadError):
        load_model(export)
