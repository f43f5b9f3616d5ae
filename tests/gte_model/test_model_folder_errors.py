"""A model folder is input: a bad field fails in one line naming the file and the field, before anything is built
(issue 21, findings 8, 13, 16, 17); a missing optional extra is a one-line user error, not a traceback."""

from __future__ import annotations

import json
import sys
import time

import pytest

from gte_model import ModelLoadError, export_model, load_model
from gte_model.core.errors import EXIT_USER_ERROR, MissingExtra, UserError
from tests.conftest import make_tiny_model


@pytest.fixture
def export(tmp_path):
    """A tiny exported sentence-transformers folder (2 layers, 32 wide, 512 positions)."""
    (tmp_path / "src").mkdir()
    return export_model(make_tiny_model(tmp_path / "src"), tmp_path / "m")


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def load_error(folder) -> str:
    with pytest.raises(ModelLoadError) as err:
        load_model(folder)
    message = str(err.value)
    assert "\n" not in message and "damaged or truncated" not in message, message
    return message


# ---- config.json: checked before the backbone is built (findings 8 and 17) -----------------------------------------
@pytest.mark.parametrize(("field", "value", "problem"), [
    ("hidden_size", -32, "hidden_size=-32 must be a positive integer"),
    ("num_attention_heads", 0, "num_attention_heads=0 must be a positive integer"),
    ("max_position_embeddings", 2**40, "max_position_embeddings=1,099,511,627,776 is beyond the 1,048,576 this"),
    ("num_hidden_layers", 10**7, "num_hidden_layers=10,000,000 is beyond the 512 this loader builds"),
    ("vocab_size", 0, "vocab_size=0 must be a positive integer"),
    ("intermediate_size", "64", "intermediate_size='64' must be a positive integer"),
    ("num_attention_heads", 3, "num_attention_heads=3 does not divide hidden_size=32"),
    ("pad_token_id", 999, "pad_token_id=999 is not a token id of its vocab_size=153"),
    ("hidden_act", "gelu_fancy", "hidden_act='gelu_fancy' is not an activation transformers knows"),
])
def test_a_bad_config_json_field_is_named_with_its_file_before_anything_is_built(export, field, value, problem):
    edit_json(export / "config.json", **{field: value})
    start = time.perf_counter()
    message = load_error(export)
    assert message.startswith(f"{export / 'config.json'}: {problem}"), message
    assert time.perf_counter() - start < 5  # refused up front, not after building 10^7 layers


def test_a_shape_far_beyond_what_the_weights_file_holds_is_refused_before_building(export):
    # each field within its bound, together ~100 billion parameters: the 150 kB weights file cannot hold them
    edit_json(export / "config.json", num_hidden_layers=500, hidden_size=4096, num_attention_heads=64,
              intermediate_size=16384)
    message = load_error(export)
    assert message.startswith(f"{export / 'config.json'}: ") and "imply at least" in message, message
    assert f"but model.safetensors holds only {(export / 'model.safetensors').stat().st_size:,} bytes" in message


@pytest.mark.parametrize(("field", "value"), [("intermediate_size", 128), ("hidden_size", 64)])
def test_a_config_json_whose_shapes_differ_from_the_weights_blames_config_json(export, field, value):
    edit_json(export / "config.json", **{field: value})
    message = load_error(export)
    assert message.startswith(f"{export / 'config.json'}: its shapes do not match the tensors in model.safetensors")


def test_sharded_weights_load_and_count_all_their_shards(export):
    model = load_model(export)
    (export / "model.safetensors").unlink()
    model.backbone.save_pretrained(str(export), max_shard_size="40KB")  # an index and its shards
    shards = sorted(export.glob("model-*.safetensors"))
    assert len(shards) > 1 and (export / "model.safetensors.index.json").is_file()
    assert load_model(export).encode(["a cat"]).shape == (1, 32)
    edit_json(export / "config.json", num_hidden_layers=500, hidden_size=4096, num_attention_heads=64)
    message = load_error(export)
    assert f"but its {len(shards)} weight shards hold only {sum(s.stat().st_size for s in shards):,} bytes" in message


def test_a_truncated_weights_file_is_still_blamed_on_the_weights_not_on_config_json(export):
    weights = export / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="damaged or truncated") as err:
        load_model(export)
    assert str(err.value).startswith(f"{weights}: failed to load")


# ---- the other files of a folder (finding 17) ----------------------------------------------------------------------
@pytest.mark.parametrize("value", [-5, 0, 10**9, 1e9, "128"])
def test_a_bad_max_seq_length_names_sentence_bert_config_json(export, value):
    edit_json(export / "sentence_bert_config.json", max_seq_length=value)
    message = load_error(export)
    assert message.startswith(f"{export / 'sentence_bert_config.json'}: max_seq_length={value!r} must be from 1 to "
                              "512"), message


def test_a_max_seq_len_argument_beyond_the_positions_is_refused(export):
    with pytest.raises(ModelLoadError, match=r"^max_seq_len=4096 must be from 1 to 512"):
        load_model(export, max_seq_len=4096)
    with pytest.raises(ModelLoadError, match=r"^max_seq_len=-1 must be from 1 to 512"):
        load_model("tiny", max_seq_len=-1)
    assert load_model(export, max_seq_len=64).max_seq_len == 64


def test_gte_train_names_model_max_seq_len_beyond_the_positions_of_its_base(export):
    from gte_model.core.config import load_config
    from tests.train.tinydata import TINY_CONFIG
    from train.build import build_model
    from train.config import TrainConfig

    cfg = load_config(TrainConfig, TINY_CONFIG, [f"model.init_from={export}", "model.max_seq_len=600"])
    with pytest.raises(UserError, match=r"^model\.max_seq_len=600 exceeds the 512 positions of the backbone"):
        build_model(cfg)
    cfg.model.max_seq_len = 100
    assert build_model(cfg).max_seq_len == 100


@pytest.mark.parametrize("prompts", [["query: ", "passage: "], {"query": 3}, "query: "])
def test_prompts_that_are_not_an_object_of_strings_name_the_file(export, prompts):
    edit_json(export / "config_sentence_transformers.json", prompts=prompts)
    message = load_error(export)
    assert message.startswith(f"{export / 'config_sentence_transformers.json'}: prompts="), message


def test_a_tokenizer_without_a_pad_token_names_tokenizer_config_json(export):
    edit_json(export / "tokenizer_config.json", pad_token=None)
    message = load_error(export)
    assert message.startswith(f"{export / 'tokenizer_config.json'}: the tokenizer has no pad_token"), message


def test_a_config_vocab_smaller_than_the_tokenizer_names_vocab_size(export):
    edit_json(export / "config.json", vocab_size=20)
    message = load_error(export)
    assert message.startswith(f"{export / 'config.json'}: vocab_size=20 is smaller than the tokenizer's"), message


def test_a_module_entry_that_is_not_an_object_names_modules_json(export):
    (export / "modules.json").write_text(json.dumps(["0_Transformer"]))
    assert load_error(export).startswith(f"{export / 'modules.json'}: holds")


def test_the_checked_folder_still_loads_and_encodes(export):
    model = load_model(export)
    assert model.max_seq_len == 512 and model.encode(["the cat plays piano"]).shape == (1, 32)


# ---- gte encode and gte merge (findings 16 and 13) -----------------------------------------------------------------
def test_gte_encode_with_a_text_that_is_not_utf8_is_one_line_and_exit_2(export, capsys):
    from train.app.cli import main

    text = b"caf\xe9 au lait".decode("utf-8", "surrogateescape")  # what sys.argv holds for Latin-1 bytes
    assert main(["encode", "--model", str(export), "good text", text]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("gte encode: TEXT 2: not valid UTF-8 (byte 0xe9 at character 3)") and "\n" not in err


def test_gte_encode_reports_a_bad_model_folder_in_one_line(export, capsys):
    from train.app.cli import main

    edit_json(export / "config.json", hidden_size=-32)
    assert main(["encode", "--model", str(export), "a text"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err == (f"gte encode: {export / 'config.json'}: hidden_size=-32 must be a positive integer; fix "
                   "config.json or export the model again")


@pytest.mark.parametrize("preset", ["tiny", "gte-small"])
def test_gte_merge_refuses_a_preset_because_it_is_a_fresh_random_model(export, tmp_path, preset):
    from gte_model.merge import merge_main

    with pytest.raises(UserError, match=rf"models\.0={preset}: a size preset is a random model, not a saved one"):
        merge_main([f"models=[{preset},{export}]", "weights=[0.5,0.5]", f"out_dir={tmp_path / 'merged'}"])
    assert not (tmp_path / "merged").exists()


def test_gte_run_refuses_a_merge_of_its_base_when_the_base_is_a_preset():
    from train.app.pipeline import PipelineConfig

    cfg = PipelineConfig()
    cfg.run.dir = "runs/x"
    cfg.stage1.model.init_from = "tiny"
    cfg.merge.models, cfg.merge.weights = ["base", "stage2"], [0.3, 0.7]
    cfg.resolve()
    assert any(e.startswith("merge.models.0=tiny: a size preset is a random model") for e in cfg.validate())


# ---- optional extras: a missing one is a user error naming the setting (finding 16) ---------------------------------
def test_lora_without_peft_is_a_one_line_user_error_naming_the_setting(monkeypatch, tiny_model):
    from gte_model.lora import add_lora

    monkeypatch.setitem(sys.modules, "peft", None)  # what `import peft` meets when peft is not installed
    with pytest.raises(MissingExtra) as err:
        add_lora(tiny_model.backbone, r=8, alpha=16)
    assert isinstance(err.value, UserError) and isinstance(err.value, ImportError)
    assert str(err.value) == ("model.lora.r=8: peft is not installed; run `pip install -e .[lora]` or set "
                              "model.lora.r=0 (full fine-tuning)")


def test_config_validation_reports_missing_extras_with_every_other_problem(monkeypatch):
    from gte_model.core.config import load_config
    from tests.train.tinydata import TINY_CONFIG
    from train.app.pipeline import PipelineConfig
    from train.config import TrainConfig

    monkeypatch.setitem(sys.modules, "peft", None)
    monkeypatch.setitem(sys.modules, "wandb", None)
    cfg = load_config(TrainConfig, TINY_CONFIG, [])
    assert cfg.validate(world_size=1, zero_stage=0) == []
    cfg.model.lora.r, cfg.log.wandb = 4, "on"
    problems = cfg.validate(world_size=1, zero_stage=0)
    assert "model.lora.r=4: peft is not installed; run `pip install -e .[lora]` or set model.lora.r=0 (full " \
           "fine-tuning)" in problems
    assert any(p.startswith("log.wandb=on: wandb is not installed") for p in problems)
    pipeline = PipelineConfig()
    pipeline.stage2.model.lora.r = 8  # gte run: found before stage 1 starts, not when stage 2 does
    assert any(p.startswith("stage2: model.lora.r=8: peft is not installed") for p in pipeline.validate())


def test_wandb_on_without_wandb_is_a_one_line_user_error(monkeypatch, tmp_path):
    from train.metrics import _start_wandb

    monkeypatch.setitem(sys.modules, "wandb", None)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(MissingExtra, match=r"^log\.wandb=on: wandb is not installed; run `pip install -e \.\[wandb"):
        _start_wandb("on", "p", "n", tmp_path, {})
    assert _start_wandb("auto", "p", "n", tmp_path, {}) is None  # auto: used only when installed


def test_a_deepspeed_launch_without_deepspeed_is_a_one_line_user_error(monkeypatch):
    from train.backend import make_accelerator
    from train.config import TrainConfig

    monkeypatch.setitem(sys.modules, "deepspeed", None)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(MissingExtra, match=r"^ACCELERATE_USE_DEEPSPEED=true .*: deepspeed is not installed; run "):
        make_accelerator(TrainConfig())


def test_ray_without_ray_is_the_same_kind_of_error(monkeypatch):
    from data_prep.engine import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtra, match=r"^engine=ray: Ray is not installed; run `pip install -e \.\[ray\]`"):
        import_ray()


def test_an_extra_whose_own_dependency_is_missing_is_reported_as_failing_to_import(monkeypatch, tmp_path):
    from gte_model.core.errors import import_extra

    (tmp_path / "gte_broken_extra").mkdir()
    (tmp_path / "gte_broken_extra" / "__init__.py").write_text("import gte_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtra) as err:
        import_extra("gte_broken_extra", "k=v", "x", "set k=w")
    assert str(err.value) == ("k=v: gte_broken_extra fails to import (No module named 'gte_no_such_dependency'); "
                              "run `pip install -e .[x]` or set k=w")
